"""The AsyncAPI document of Pago's event contract, built from ``pago.common.channels``.

One FastStream broker is declared with every subscription and publication of
``pago.common.channels`` (each typed with its pydantic payload) and never connected: FastStream
turns it into an AsyncAPI 3.0 document. The api serves it at ``/asyncapi`` (HTML) and
``/asyncapi.json``; ``docs/asyncapi.json`` is a rendered copy, held equal to this by a test
(regenerate with ``python -m pago.common.asyncapi > docs/asyncapi.json``).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.specification import AsyncAPI, Specification, get_asyncapi_html

from pago.common.channels import PUBLICATIONS, SUBSCRIPTIONS, Publication, Subscription

TITLE = "Pago events"
VERSION = "1"
"""The major schema version of the events (``pago.common.events.SCHEMA_VERSION``)."""
DESCRIPTION = (
    "The Kafka topics Pago writes and reads. Every record has the headers `v` (the event's "
    "major schema version: a consumer refuses a record above what it reads) and `event_type` "
    "(the event's class name). Events evolve additively: ignore fields you do not know. "
    "Delivery is at-least-once; every consumer is idempotent (`checkout.sessions`: by "
    "`event_id`; `card.sessions`: by `event_id`; `chain.transfers`: by `(network, tx_hash, "
    "log_index)`)."
)
SERVER = "kafka:9092"
"""A placeholder: each deployment names its own bootstrap servers."""


def declare_publisher(broker: KafkaBroker, publication: Publication) -> DefaultPublisher:
    """``publication`` as a FastStream publisher of ``broker`` (title, description, schema)."""
    return broker.publisher(
        publication.topic,
        title=publication.title,
        description=publication.description,
        schema=publication.payload,
    )


def _declare_subscriber(broker: KafkaBroker, subscription: Subscription) -> None:
    subscriber = broker.subscriber(
        subscription.topic,
        group_id=subscription.group_id,
        title=subscription.title,
        description=subscription.description,
    )

    async def reads(event: Any) -> None:
        return None

    # Only its signature is read: it names the payload the document shows (set here, as this
    # module's annotations are strings).
    reads.__annotations__ = {"event": subscription.payload, "return": None}
    subscriber(reads)


def contract_broker() -> KafkaBroker:
    """A broker declaring every topic Pago produces and consumes (documentation only)."""
    broker = KafkaBroker(SERVER, specification_url=SERVER)
    for subscription in SUBSCRIPTIONS:
        _declare_subscriber(broker, subscription)
    for publication in PUBLICATIONS:
        declare_publisher(broker, publication)
    return broker


@functools.cache
def specification() -> Specification:
    return AsyncAPI(
        contract_broker(),
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        schema_version="3.0.0",
    ).to_specification()


@functools.cache
def document() -> dict[str, Any]:
    """The AsyncAPI document as JSON-able data."""
    data: dict[str, Any] = json.loads(specification().to_json())
    return data


@functools.cache
def document_json() -> str:
    """The document as ``docs/asyncapi.json`` holds it (sorted keys, two-space indent)."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


@functools.cache
def document_html() -> str:
    """The document rendered by AsyncAPI's standalone React component (loaded from its CDN)."""
    return get_asyncapi_html(specification(), try_it_out_path=None)


def main() -> None:
    sys.stdout.write(document_json())


if __name__ == "__main__":
    main()
