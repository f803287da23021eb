"""The ``checkout.sessions`` consumer: deliveries are stored before the offsets move.

FastStream runs the poll loop (a batch subscriber in group ``pago-notifier``) with
``auto_commit=False`` and ``no_ack=True``: FastStream 0.5's own ack policies commit every
assigned partition at once, and after a handler error leave the consumer positioned past the
failed batch, so the next commit would skip it. Instead the handler

1. parses the batch (a record that is not a session event is logged with its offset and
   skipped: it can never become a webhook, and holding the partition would stall every
   merchant's webhooks behind it);
2. fans it out into ``webhook_deliveries`` in one transaction;
3. wakes the delivery worker and appends the events to the hosted page's live feed in Redis
   (best effort, see ``live``);
4. commits ``last offset + 1`` of exactly the partitions in the batch.

On an error it rolls back, seeks every partition of the batch back to its first record and
waits (doubling up to ``max_backoff``) before the batch comes round again. A crash between the
database commit and the offset commit redelivers the batch; the ``(endpoint_id, event_id)``
unique constraint turns it into a no-op. So each event reaches each endpoint's queue exactly
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.events import SESSION_EVENT_ADAPTER, AnySessionEvent
from pago.common.topics import CHECKOUT_SESSIONS
from pago.notifier import metrics
from pago.notifier.live import LiveFeed
from pago.notifier.service import FanOut, fan_out

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
"""Seconds before the first retry of a failed batch."""

FanOutFn = Callable[[AsyncConnection, Sequence[AnySessionEvent]], Awaitable[FanOut]]


class ConsumerPort(Protocol):
    """What the handler needs of the Kafka consumer besides the batch."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None: ...


class AioKafkaPort:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._consumer.seek(tp, offset)


class InMemoryPort:
    """For a consumer without offsets (FastStream's in-memory ``TestKafkaBroker``)."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None


def port_for(consumer: object) -> ConsumerPort:
    if isinstance(consumer, AIOKafkaConsumer):
        return AioKafkaPort(consumer)
    return InMemoryPort()


def _span(
    records: Sequence[ConsumerRecord[Any, Any]],
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(first offset, last offset + 1) of each partition in the batch."""
    first: dict[TopicPartition, int] = {}
    after: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
        after[tp] = max(after.get(tp, 0), record.offset + 1)
    return first, after


class SessionEventHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_stored: Callable[[], None],
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        port: Callable[[object], ConsumerPort] = port_for,
        fan_out: FanOutFn = fan_out,
        live: LiveFeed | None = None,
    ) -> None:
        self._engine = engine
        self._fan_out = fan_out
        self._live = live
        self._on_stored = on_stored
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self._backoff = first_backoff
        self._port = port
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Cut a retry wait short (SIGTERM); a batch being stored still finishes."""
        self._stopping.set()

    def _parse(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[AnySessionEvent]:
        events: list[AnySessionEvent] = []
        for record in records:
            try:
                events.append(SESSION_EVENT_ADAPTER.validate_json(record.value or b""))
            except ValidationError as exc:
                metrics.EVENTS.labels("invalid").inc()
                log.error(
                    "skipping a checkout.sessions record that is not a session event",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": exc.errors(include_url=False)[:3],
                    },
                )
        return events

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]], consumer: object) -> None:
        if not records:
            return
        port = self._port(consumer)
        first, after = _span(records)
        try:
            events = self._parse(records)
            async with self._engine.begin() as conn:
                result = await self._fan_out(conn, events)
        except Exception:
            metrics.BATCH_FAILURES.inc()
            log.exception(
                "fan-out failed; rolled back and rewound for another attempt",
                extra={"records": len(records), "retry_in_s": self._backoff},
            )
            port.rewind(first)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            return
        self._backoff = self._first_backoff
        metrics.EVENTS.labels("webhook").inc(result.events)
        metrics.EVENTS.labels("ignored").inc(len(events) - result.events)
        if result.deliveries:
            metrics.DELIVERIES_CREATED.inc(result.deliveries)
            self._on_stored()
        if self._live is not None:
            await self._live.publish(events)  # best effort; never holds the offsets back
        try:
            await port.commit(after)
        except Exception:
            # The deliveries are stored; the batch comes back after a restart or rebalance and
            # fans out to nothing new. Reading on is safe: a later commit covers these offsets.
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed after the deliveries were stored", exc_info=True)


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
    broker = KafkaBroker(
        bootstrap_servers.split(","),
        client_id="pago-notifier",
        graceful_timeout=graceful_timeout,
        logger=logging.getLogger("pago.notifier.kafka"),
        log_level=logging.DEBUG,
    )
    subscriber = broker.subscriber(
        CHECKOUT_SESSIONS,
        group_id=group_id,
        batch=True,
        max_records=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        auto_commit=False,
        no_ack=True,
        # A new group starts from the oldest retained event: "latest" would silently drop the
        # webhooks of every event published before the notifier first joined.
        auto_offset_reset="earliest",
        title="checkout.sessions:pago-notifier",
        description="Session events, fanned out into signed webhook deliveries",
    )

    @subscriber
    async def on_session_events(message: KafkaMessage) -> None:
        await handler.handle(message.raw_message, message.consumer)

    return broker
