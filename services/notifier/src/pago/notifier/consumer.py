"""The ``checkout.sessions`` consumer: deliveries are stored before the offsets move.

FastStream runs the poll loop (a batch subscriber in group ``pago-notifier``) with
``auto_commit=False`` and ``no_ack=True``: FastStream 0.5's own ack policies commit every
assigned partition at once, and after a handler error leave the consumer positioned past the
failed batch, so the next commit would skip it. Instead the handler

1. parses the batch; a record that is not a session event this notifier reads (not JSON,
   invalid, a newer major schema version, an unknown ``event_type``) is set aside for the
   dead-letter topic: it can never become a webhook as it is, and holding the partition would
   stall every merchant's webhooks behind it (added fields are ignored, not refused);
2. fans it out into ``webhook_deliveries`` in one transaction (after a poison error — one the
   data causes, see ``pago.common.deadletter.is_poison`` — the next attempt fans out one event
   per transaction and dead-letters only the events that still fail alone);
3. writes the dead letters and waits for the broker's acknowledgement;
4. wakes the delivery worker and appends the events to the hosted page's live feed in Redis
   (best effort, see ``live``);
5. commits ``last offset + 1`` of exactly the partitions in the batch.

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
from typing import Any, Protocol, get_args

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.deadletter import (
    DeadLetter,
    DeadLetterSink,
    Reason,
    Rejected,
    apply_isolated,
    decode,
    header,
    is_poison,
)
from pago.common.events import SESSION_EVENT_ADAPTER, AnySessionEvent
from pago.common.topics import CHECKOUT_SESSIONS
from pago.notifier import metrics
from pago.notifier.live import LiveFeed
from pago.notifier.service import FanOut, fan_out

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
"""Seconds before the first retry of a failed batch."""

FanOutFn = Callable[[AsyncConnection, Sequence[AnySessionEvent]], Awaitable[FanOut]]
EVENT_TYPES = frozenset(
    name.encode()
    for t in get_args(AnySessionEvent)
    for name in (t.__name__, t.model_fields["type"].default)
)
"""The ``event_type`` headers of ``checkout.sessions`` this notifier reads, spelled as the outbox
writes them (the class name) or as the event's ``type``; a record without the header is read."""


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
        deadletters: DeadLetterSink,
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
        self._deadletters = deadletters
        self._isolate = False
        """Set after a batch failed with a poison error: the next is fanned out an event at a
        time, so only the event that causes it is dead-lettered."""
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self._backoff = first_backoff
        self._port = port
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Cut a retry wait short (SIGTERM); a batch being stored still finishes."""
        self._stopping.set()

    def _parse(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[list[tuple[ConsumerRecord[Any, Any], AnySessionEvent]], list[DeadLetter]]:
        events: list[tuple[ConsumerRecord[Any, Any], AnySessionEvent]] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                event_type = header(record, "event_type")
                if event_type is not None and event_type not in EVENT_TYPES:
                    raise Rejected(Reason.UNKNOWN_EVENT_TYPE, repr(event_type))
                events.append((record, decode(record, SESSION_EVENT_ADAPTER.validate_json)))
            except Rejected as rejected:
                letters.append(DeadLetter.of(record, rejected))
        return events, letters

    async def _store(self, events: Sequence[AnySessionEvent]) -> FanOut:
        async with self._engine.begin() as conn:
            return await self._fan_out(conn, events)

    async def _store_one_by_one(
        self, pairs: Sequence[tuple[ConsumerRecord[Any, Any], AnySessionEvent]]
    ) -> tuple[FanOut, list[DeadLetter]]:
        total = FanOut(0, 0)

        async def one(pair: tuple[ConsumerRecord[Any, Any], AnySessionEvent]) -> None:
            nonlocal total
            result = await self._store([pair[1]])
            total = FanOut(total.events + result.events, total.deliveries + result.deliveries)

        poisoned = await apply_isolated(pairs, one, backoff=self._first_backoff)
        return total, [DeadLetter.poison(record, exc) for (record, _), exc in poisoned]

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]], consumer: object) -> None:
        if not records:
            return
        port = self._port(consumer)
        first, after = _span(records)
        try:
            pairs, letters = self._parse(records)
            events = [event for _, event in pairs]
            if self._isolate:
                result, poisoned = await self._store_one_by_one(pairs)
                letters += poisoned
                gone = {id(letter.record) for letter in poisoned}
                events = [event for record, event in pairs if id(record) not in gone]
            else:
                result = await self._store(events)
            # Acknowledged before the offsets move past them; if this fails the batch comes
            # round again and fans out to nothing new.
            await self._deadletters.send(letters)
        except Exception as exc:
            metrics.BATCH_FAILURES.inc()
            poison = is_poison(exc)
            log.exception(
                "fan-out failed; rolled back and rewound for another attempt",
                extra={"records": len(records), "retry_in_s": self._backoff, "isolating": poison},
            )
            self._isolate = self._isolate or poison
            port.rewind(first)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            return
        self._isolate = False
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
