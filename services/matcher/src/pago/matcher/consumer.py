"""The ``chain.transfers`` consumer: at-least-once, acknowledged only after Postgres commits.

FastStream drives the poll loop (a batch subscriber, ``group_id="pago-matcher"``) but not the
acknowledgement: the subscriber runs with ``auto_commit=False`` and ``no_ack=True``, and this
handler commits offsets itself. FastStream 0.5's own policies cannot be trusted with money:

- after a handler error its default watcher *rejects* the batch, which commits nothing but
  leaves the consumer's position past it, so the next successful commit skips it for good;
- ``nack()`` seeks back only the partition of the batch's *first* record, while a batch spans
  several partitions;
- ``ack()`` commits the position of every assigned partition at once.

So the handler (1) tops the poll up with records the consumer already holds, (2) screens
senders, (3) applies the whole batch in one transaction, (4) after the commit, commits exactly
``last offset + 1`` of each partition in the batch. On any error it rolls back and seeks every
partition of the batch back to its first record, then waits (doubling up to ``max_backoff``)
before the same records come round again: a failure never moves a committed offset past a
record whose effects are not in Postgres. A crash between the database
commit and the offset commit redelivers the batch, and the domain turns every redelivered
transfer into a no-op (unique ``(network, tx_hash, log_index)``), so nothing is credited twice.

Nothing is skipped silently. A record that can never be a transfer (not JSON, invalid, a newer
major schema version, an unknown ``event_type`` header) goes to the dead-letter topic with its
reason (``pago.common.deadletter``); so does a *poison* record, whose handling keeps raising an
error the record itself causes: after a batch fails with such an error, the next attempt applies
its records one per transaction and dead-letters only those that still fail alone. The letters
are acknowledged by the broker before the offsets move past them. A transient error (Postgres
or Kafka unreachable, a timeout) is never a dead letter: the batch is rewound and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.broker.message import StreamMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.deadletter import (
    DeadLetter,
    DeadLetterSink,
    Rejected,
    apply_isolated,
    is_poison,
)
from pago.common.events import SCHEMA_VERSION
from pago.common.topics import CHAIN_TRANSFERS
from pago.matcher import metrics
from pago.matcher.aml.screener import Screener
from pago.matcher.records import ChainRecord, decode, split
from pago.matcher.service import BatchOutcome, TransferMatcher

log = logging.getLogger(__name__)

GROUP_ID = "pago-matcher"
FIRST_BACKOFF = 0.5
"""Seconds before the first retry of a failed batch."""


class ConsumerPort(Protocol):
    """What the handler needs of the consumer beyond the batch FastStream handed it."""

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[ConsumerRecord[Any, Any]]:
        """Records already fetched or arriving within ``timeout_ms`` (at most ``max_records``)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next record to read, per partition)."""
        ...

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read each partition again from ``offsets`` on the next poll."""
        ...


class AioKafkaPort:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[ConsumerRecord[Any, Any]]:
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [record for records in fetched.values() for record in records]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = self._consumer.assignment()
        for tp, offset in offsets.items():
            # A partition revoked meanwhile cannot be sought; its new owner starts from the
            # committed offset, which never passed these records.
            if tp in owned:
                self._consumer.seek(tp, offset)


class InMemoryPort:
    """For a consumer that keeps no offsets (FastStream's in-memory ``TestKafkaBroker``)."""

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[ConsumerRecord[Any, Any]]:
        return []

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None


def port_for(consumer: object) -> ConsumerPort:
    if isinstance(consumer, AIOKafkaConsumer):
        return AioKafkaPort(consumer)
    return InMemoryPort()


def utc_now() -> datetime:
    return datetime.now(UTC)


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


class TransferBatchHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        screener: Screener,
        matcher: TransferMatcher,
        *,
        deadletters: DeadLetterSink,
        schema_version: int = SCHEMA_VERSION,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        batch_size: int = 1000,
        top_up_ms: int = 20,
        port: Callable[[object], ConsumerPort] = port_for,
        clock: Callable[[], datetime] = utc_now,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._screener = screener
        self._matcher = matcher
        self._deadletters = deadletters
        self._schema_version = schema_version
        self._isolate = False
        """Set after a batch failed with a poison error: the next one is applied a record at a
        time, so only the record that causes it is dead-lettered."""
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self._batch_size = batch_size
        self._top_up_ms = top_up_ms
        self._port = port
        self._clock = clock
        self._backoff = first_backoff
        self._stopping = asyncio.Event()
        self.on_halt = on_halt
        """Called once if the consumer must stop (the app sets it to its graceful stop)."""
        self._halted = False

    def stop(self) -> None:
        """Cut a retry wait short (SIGTERM); a batch being applied still finishes."""
        self._stopping.set()

    def _rewind(self, port: ConsumerPort, batch: Sequence[ConsumerRecord[Any, Any]]) -> None:
        try:
            port.rewind(_span(batch)[0])
        except Exception:
            # Reading on from here could commit past the failed records. Stop taking batches
            # (none is committed again) and have the process stop: the next consumer starts
            # from the committed offsets, which never passed them.
            self._halted = True
            log.critical("could not rewind a failed batch; stopping", exc_info=True)
            self.on_halt()

    def _parse(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[list[tuple[ConsumerRecord[Any, Any], ChainRecord]], list[DeadLetter]]:
        """The batch's events (with their records), and the records that cannot be one."""
        events = []
        letters = []
        for record in records:
            try:
                events.append((record, decode(record, supported=self._schema_version)))
            except Rejected as rejected:
                letters.append(DeadLetter.of(record, rejected))
        return events, letters

    async def _apply(self, records: Sequence[ChainRecord]) -> BatchOutcome:
        transfers, markers = split(records)
        verdicts = await self._screener.screen_many(self._matcher.senders_to_screen(transfers))
        async with self._engine.begin() as conn:
            outcome = await self._matcher.apply(
                conn, transfers, verdicts, self._clock(), markers=markers
            )
        outcome.committed()
        return outcome

    async def _apply_one_by_one(
        self, pairs: Sequence[tuple[ConsumerRecord[Any, Any], ChainRecord]]
    ) -> list[DeadLetter]:
        async def one(pair: tuple[ConsumerRecord[Any, Any], ChainRecord]) -> None:
            await self._apply([pair[1]])

        poisoned = await apply_isolated(pairs, one, backoff=self._first_backoff)
        return [DeadLetter.poison(record, exc) for (record, _), exc in poisoned]

    async def _top_up(self, batch: list[ConsumerRecord[Any, Any]], port: ConsumerPort) -> None:
        """Fill ``batch`` (in place) up to ``batch_size`` with records the consumer holds.

        One poll returns what one fetch brought (a few dozen records per partition), and a
        transaction costs the same few round trips for 20 records as for 1,000: reading on
        while records are ready is what lets a backlog drain in big transactions. The loop is
        FastStream's, and it waits for this handler, so nothing else polls meanwhile. In place,
        so that if a fetch fails the caller still knows every record it must rewind.
        """
        deadline = time.monotonic() + self._top_up_ms / 1000
        while len(batch) < self._batch_size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await port.fetch_more(self._batch_size - len(batch), remaining_ms)
            if not more:
                break
            batch.extend(more)

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]], consumer: object) -> None:
        if not records or self._halted:
            return
        started = time.perf_counter()
        port = self._port(consumer)
        batch = list(records)
        try:
            await self._top_up(batch, port)
            pairs, letters = self._parse(batch)
            if self._isolate:
                letters += await self._apply_one_by_one(pairs)
            else:
                await self._apply([t for _, t in pairs])
            # Acknowledged before the offsets move past them; if this fails the batch comes
            # round again and applying it again changes nothing.
            await self._deadletters.send(letters)
        except Exception as exc:
            metrics.BATCH_FAILURES.inc()
            poison = is_poison(exc)
            log.exception(
                "batch failed; rolled back and rewound for another attempt",
                extra={
                    "records": len(batch),
                    "retry_in_s": self._backoff,
                    "isolating": poison,
                },
            )
            self._isolate = self._isolate or poison
            self._rewind(port, batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            return
        self._isolate = False
        self._backoff = self._first_backoff
        for letter in letters:
            metrics.INVALID_TRANSFERS.labels(letter.reason.value).inc()
        metrics.BATCH_RECORDS.observe(len(batch))
        try:
            await port.commit(_span(batch)[1])
        except Exception:
            # Postgres has it all; the batch comes back after a restart or rebalance and every
            # transfer in it is then a no-op. Reading on is safe: a later commit covers these.
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed after the database commit", exc_info=True)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)


async def _no_decoding(message: StreamMessage[Any]) -> None:
    """The handler parses the raw records itself (dead-lettering a bad one); FastStream's default
    would JSON-decode every record first, for nothing — a third of the handler's CPU."""


def build_broker(
    bootstrap_servers: str,
    handler: TransferBatchHandler,
    *,
    batch_size: int,
    batch_timeout_ms: int,
    graceful_timeout: float,
    fetch_wait_ms: int = 100,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    group_id: str = GROUP_ID,
) -> KafkaBroker:
    """The FastStream broker with the matcher's one subscriber."""
    broker = KafkaBroker(
        bootstrap_servers.split(","),
        client_id="pago-matcher",
        graceful_timeout=graceful_timeout,
        logger=logging.getLogger("pago.matcher.kafka"),
        log_level=logging.DEBUG,
    )
    subscriber = broker.subscriber(
        CHAIN_TRANSFERS,
        group_id=group_id,
        batch=True,
        max_records=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        auto_commit=False,
        no_ack=True,
        # A new group must start from the oldest transfer, not the newest: "latest" would
        # silently skip every payment published before the matcher first joined.
        auto_offset_reset="earliest",
        decoder=_no_decoding,
        title="chain.transfers:pago-matcher",
        description="Observed token transfers, applied to checkout sessions exactly once",
    )

    @subscriber
    async def on_transfers(message: KafkaMessage) -> None:
        await handler.handle(message.raw_message, message.consumer)

    return broker
