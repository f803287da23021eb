"""The ``checkout.sessions`` consumer: deliveries are stored before the offsets move.

The loop — parse, store in one transaction, dead letters acknowledged, then commit exactly the
batch's offsets; on an error roll back, rewind what it still owns and back off, or halt when it
cannot — is the shared ``pago.common.consumer.BatchConsumer`` (its docstring says why it keeps
the offsets itself rather than FastStream's ack policies). What is the notifier's own:

1. a record that is not a session event this notifier reads (not JSON, invalid, a newer major
   schema version, an unknown ``event_type``) is set aside for the dead-letter topic: it can
   never become a webhook as it is, and holding the partition would stall every merchant's
   webhooks behind it (added fields are ignored, not refused);
2. the events are fanned out into ``webhook_deliveries`` (one event per transaction after a
   poison error, so only the event that still fails alone is dead-lettered);
3. once stored (and the letters acknowledged) it wakes the delivery worker and appends the
   events to the hosted page's live feed in Redis (best effort, see ``live``).

A crash between the database commit and the offset commit redelivers the batch; the
``(endpoint_id, event_id)`` unique constraint turns it into a no-op. So each event reaches each
endpoint's queue exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, get_args

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common import consumer as shared
from pago.common.channels import NOTIFIER_SESSIONS
from pago.common.consumer import (
    FIRST_BACKOFF,
    Applied,
    BatchConsumer,
    ConsumerMetrics,
    ConsumerPort,
    ServiceHandler,
    port_for,
)
from pago.common.deadletter import DeadLetterSink, Reason, Rejected, decode, header
from pago.common.events import SESSION_EVENT_ADAPTER, AnySessionEvent
from pago.notifier import metrics
from pago.notifier.live import LiveFeed
from pago.notifier.service import FanOut, fan_out

FanOutFn = Callable[[AsyncConnection, Sequence[AnySessionEvent]], Awaitable[FanOut]]
EVENT_TYPES = frozenset(
    name.encode()
    for t in get_args(AnySessionEvent)
    for name in (t.__name__, t.model_fields["type"].default)
)
"""The ``event_type`` headers of ``checkout.sessions`` this notifier reads, spelled as the outbox
writes them (the class name) or as the event's ``type``; a record without the header is read."""

METRICS = ConsumerMetrics(
    batch_failures=metrics.BATCH_FAILURES, commit_failures=metrics.COMMIT_FAILURES
)


def parse(record: ConsumerRecord[Any, Any]) -> AnySessionEvent:
    event_type = header(record, "event_type")
    if event_type is not None and event_type not in EVENT_TYPES:
        raise Rejected(Reason.UNKNOWN_EVENT_TYPE, repr(event_type))
    return decode(record, SESSION_EVENT_ADAPTER.validate_json)


class SessionEventHandler(ServiceHandler[AnySessionEvent, FanOut]):
    """The notifier's steps in the shared batch consumer."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_stored: Callable[[], None],
        deadletters: DeadLetterSink,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        port: Callable[[object], ConsumerPort] = port_for,
        fan_out: FanOutFn = fan_out,
        live: LiveFeed | None = None,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._fan_out = fan_out
        self._live = live
        self._on_stored = on_stored
        self.consumer = BatchConsumer(
            parse=parse,
            apply=self._store,
            done=self._done,
            deadletters=deadletters,
            metrics=METRICS,
            max_backoff=max_backoff,
            first_backoff=first_backoff,
            port=port,
            on_halt=on_halt,
        )

    async def _store(self, events: Sequence[AnySessionEvent]) -> FanOut:
        async with self._engine.begin() as conn:
            return await self._fan_out(conn, events)

    async def _done(self, applied: Applied[AnySessionEvent, FanOut]) -> None:
        stored = sum(result.events for result in applied.results)
        deliveries = sum(result.deliveries for result in applied.results)
        metrics.EVENTS.labels("webhook").inc(stored)
        metrics.EVENTS.labels("ignored").inc(len(applied.events) - stored)
        if deliveries:
            metrics.DELIVERIES_CREATED.inc(deliveries)
            self._on_stored()
        if self._live is not None:
            await self._live.publish(applied.events)  # best effort; never holds offsets back


def build_broker(
    bootstrap_servers: str,
    handler: SessionEventHandler,
    *,
    group_id: str,
    batch_size: int,
    batch_timeout_ms: int,
    graceful_timeout: float,
    fetch_wait_ms: int,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
) -> KafkaBroker:
    """The FastStream broker with the notifier's one subscriber."""
    return shared.build_broker(
        bootstrap_servers,
        handler.consumer,
        NOTIFIER_SESSIONS,
        client_id="pago-notifier",
        batch_size=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        graceful_timeout=graceful_timeout,
        fetch_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        group_id=group_id,
    )
