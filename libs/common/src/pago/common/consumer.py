"""The one at-least-once batch consumer: offsets move only after the work is committed.

Every Kafka consumer that changes state (the matcher on ``chain.transfers``, the notifier on
``checkout.sessions``, and each one added later) is a ``BatchConsumer``: the service gives it a
*parse* step (one record → one event, or ``Rejected`` for the dead-letter topic) and an *apply*
step (a batch of events → one committed transaction), and keeps what is its own (the matcher's
AML screening and markers, the notifier's fan-out and live feed) in those steps and in its
``done`` hook. The loop:

1. optionally gathers more records the consumer already holds (``gather``, in place);
2. parses the batch; a record that can never be an event is set aside as a dead letter;
3. applies the events in one transaction — or, after a batch failed with a *poison* error (one
   the data causes, ``pago.common.deadletter.is_poison``), one event per transaction, and
   dead-letters only those that still fail alone;
4. writes the dead letters and waits for the broker's acknowledgement;
5. runs the service's ``done`` hook (metrics, wake-ups: nothing that may hold offsets back);
6. commits ``last offset + 1`` of exactly the partitions in the batch.

On any error it seeks every partition of the batch that it still owns back to the batch's first
record and waits (doubling up to ``max_backoff``) before the records come round again. A
partition revoked meanwhile is not sought: its new owner starts from the committed offset,
which never passed the failed records. If a seek of an owned partition fails, reading on could
commit past the failed records, so the consumer takes no further batch and calls ``on_halt``
(the app stops the process; the next consumer starts from the committed offsets). A crash
between the database commit and the offset commit redelivers the batch: apply steps are
idempotent, so a redelivery changes nothing.

FastStream 0.7 and its ack policies. The subscriber runs with ``AckPolicy.MANUAL`` (0.7's
replacement for 0.5's ``auto_commit=False, no_ack=True``: no auto-commit, no acknowledgement
middleware) and this module commits and seeks itself, because none of the other policies gives
commit-after-work for exactly the batch's partitions:

- ``ACK``/``ACK_FIRST`` commit with ``AIOKafkaConsumer.commit()`` and no offsets — the position
  of *every* assigned partition, not the batch's — and ``ACK`` acknowledges after an error too;
- ``REJECT_ON_ERROR``: on Kafka a reject is an ack, so a failed batch is committed past;
- ``NACK_ON_ERROR``: 0.7's ``nack`` does seek every partition of the batch back (0.5 sought
  only the first record's), but it stops at the first seek that raises — a partition revoked
  meanwhile, or any client error — and the acknowledgement middleware logs and swallows that
  and reads on: the partitions after it stay past the failed batch, and the next commit skips
  them (the drift the notifier's copy had). It never halts, knows nothing of records gathered
  beyond FastStream's poll, and retries at once, with no backoff.

(aiokafka replaces the whole assignment on a rebalance and starts every partition it keeps from
its committed offset, so a revoked partition alone leaves nothing past a failed batch; skipping
it at the seek is what keeps the rewind of the others, and of the next batch, going.)

So FastStream runs the poll loop, the consumer group (``group_id``, ``auto_offset_reset=
"earliest"``) and the AsyncAPI declaration; the offsets are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from prometheus_client import Counter, Histogram

from pago.common.channels import Subscription
from pago.common.deadletter import DeadLetter, DeadLetterSink, Rejected, apply_isolated, is_poison

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
"""Seconds before the first retry of a failed batch."""

Record: TypeAlias = "ConsumerRecord[Any, Any]"
E = TypeVar("E")
R = TypeVar("R")


class ConsumerPort(Protocol):
    """What the loop needs of the Kafka consumer beyond the batch FastStream handed it."""

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Records already fetched or arriving within ``timeout_ms`` (at most ``max_records``)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next record to read, per partition)."""
        ...

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read each partition still owned again from ``offsets`` on the next poll."""
        ...


class AioKafkaPort:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[Record]:
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

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[Record]:
        return []

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None


def port_for(consumer: object) -> ConsumerPort:
    if isinstance(consumer, AIOKafkaConsumer):
        return AioKafkaPort(consumer)
    return InMemoryPort()


def span(records: Sequence[Record]) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(first offset, last offset + 1) of each partition in the batch."""
    first: dict[TopicPartition, int] = {}
    after: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
        after[tp] = max(after.get(tp, 0), record.offset + 1)
    return first, after


@dataclass(frozen=True, slots=True)
class ConsumerMetrics:
    """The service's own series (their names carry the service)."""

    batch_failures: Counter
    commit_failures: Counter
    batch_seconds: Histogram | None = None


@dataclass(frozen=True, slots=True)
class Applied(Generic[E, R]):
    """What a batch became, handed to ``done`` after the letters were acknowledged."""

    records: Sequence[Record]
    """Every record of the batch (gathered ones included)."""
    events: Sequence[E]
    """The events applied (without the dead-lettered ones)."""
    results: Sequence[R]
    """What ``apply`` returned: once for the batch, or once per event while isolating."""
    letters: Sequence[DeadLetter]


class BatchConsumer(Generic[E, R]):
    """The loop above, for events ``E`` whose ``apply`` returns ``R``."""

    def __init__(
        self,
        *,
        parse: Callable[[Record], E],
        apply: Callable[[Sequence[E]], Awaitable[R]],
        deadletters: DeadLetterSink,
        metrics: ConsumerMetrics,
        done: Callable[[Applied[E, R]], Awaitable[None]] | None = None,
        gather: Callable[[list[Record], ConsumerPort], Awaitable[None]] | None = None,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        port: Callable[[object], ConsumerPort] = port_for,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        self._parse = parse
        self._apply = apply
        self._deadletters = deadletters
        self._metrics = metrics
        self._done = done
        self._gather = gather
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self._backoff = first_backoff
        self._port = port
        self._isolate = False
        """Set after a batch failed with a poison error: the next one is applied an event at a
        time, so only the record that causes it is dead-lettered."""
        self._stopping = asyncio.Event()
        self._halted = False
        self.on_halt = on_halt
        """Called once if the consumer must stop (the app sets it to its graceful stop)."""

    @property
    def halted(self) -> bool:
        return self._halted

    def stop(self) -> None:
        """Cut a retry wait short (SIGTERM); a batch being applied still finishes."""
        self._stopping.set()

    def _split(self, records: Sequence[Record]) -> tuple[list[tuple[Record, E]], list[DeadLetter]]:
        pairs: list[tuple[Record, E]] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                pairs.append((record, self._parse(record)))
            except Rejected as rejected:
                letters.append(DeadLetter.of(record, rejected))
        return pairs, letters

    async def _apply_one_by_one(
        self, pairs: Sequence[tuple[Record, E]]
    ) -> tuple[list[E], list[R], list[DeadLetter]]:
        results: list[R] = []

        async def one(pair: tuple[Record, E]) -> None:
            results.append(await self._apply([pair[1]]))

        poisoned = await apply_isolated(pairs, one, backoff=self._first_backoff)
        gone = {id(record) for (record, _), _exc in poisoned}
        events = [event for record, event in pairs if id(record) not in gone]
        return events, results, [DeadLetter.poison(record, exc) for (record, _), exc in poisoned]

    def _rewind(self, port: ConsumerPort, batch: Sequence[Record]) -> None:
        try:
            port.rewind(span(batch)[0])
        except Exception:
            # Reading on from here could commit past the failed records. Stop taking batches
            # (none is committed again) and have the process stop: the next consumer starts
            # from the committed offsets, which never passed them.
            self._halted = True
            log.critical("could not rewind a failed batch; stopping", exc_info=True)
            self.on_halt()

    async def handle(self, records: Sequence[Record], consumer: object) -> None:
        """One poll's records; ``consumer`` is what FastStream's message carries."""
        if not records or self._halted:
            return
        started = time.perf_counter()
        port = self._port(consumer)
        batch = list(records)
        try:
            if self._gather is not None:
                await self._gather(batch, port)
            pairs, letters = self._split(batch)
            if self._isolate:
                events, results, poisoned = await self._apply_one_by_one(pairs)
                letters += poisoned
            else:
                events = [event for _, event in pairs]
                results = [await self._apply(events)]
            # Acknowledged before the offsets move past them; if this fails the batch comes
            # round again and applying it again changes nothing.
            await self._deadletters.send(letters)
        except Exception as exc:
            self._metrics.batch_failures.inc()
            poison = is_poison(exc)
            log.exception(
                "batch failed; rolled back and rewound for another attempt",
                extra={"records": len(batch), "retry_in_s": self._backoff, "isolating": poison},
            )
            self._isolate = self._isolate or poison
            self._rewind(port, batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            return
        self._isolate = False
        self._backoff = self._first_backoff
        if self._done is not None:
            await self._done(Applied(batch, events, results, letters))
        try:
            await port.commit(span(batch)[1])
        except Exception:
            # The work is committed; the batch comes back after a restart or rebalance and
            # changes nothing then. Reading on is safe: a later commit covers these offsets.
            self._metrics.commit_failures.inc()
            log.warning("offset commit failed after the work was committed", exc_info=True)
        if self._metrics.batch_seconds is not None:
            self._metrics.batch_seconds.observe(time.perf_counter() - started)


class ServiceHandler(Generic[E, R]):
    """A service's steps in the loop: subclasses build ``self.consumer`` from their own
    ``parse``/``apply``/``done`` and are what the service's app and broker hold."""

    consumer: BatchConsumer[E, R]

    @property
    def on_halt(self) -> Callable[[], None]:
        """Called once if the consumer must stop (the app sets it to its graceful stop)."""
        return self.consumer.on_halt

    @on_halt.setter
    def on_halt(self, callback: Callable[[], None]) -> None:
        self.consumer.on_halt = callback

    def stop(self) -> None:
        """Cut a retry wait short (SIGTERM); a batch being applied still finishes."""
        self.consumer.stop()

    async def handle(self, records: Sequence[Record], consumer: object) -> None:
        await self.consumer.handle(records, consumer)


async def _no_decoding(message: StreamMessage[Any]) -> None:
    """The consumer parses the raw records itself (dead-lettering a bad one); FastStream's
    default would JSON-decode every record first, for nothing — a third of the matcher's CPU."""


def build_broker(
    bootstrap_servers: str,
    consumer: BatchConsumer[Any, Any],
    subscription: Subscription,
    *,
    client_id: str,
    batch_size: int,
    batch_timeout_ms: int,
    graceful_timeout: float,
    fetch_wait_ms: int,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    group_id: str | None = None,
) -> KafkaBroker:
    """The FastStream broker with ``consumer`` as its batch subscriber (``subscribe`` adds
    another: a service reading a second topic in its own group).

    ``group_id`` overrides the subscription's (a test or a second deployment gets its own
    group); everything else the subscription declares is what the AsyncAPI document says.
    """
    broker = KafkaBroker(
        bootstrap_servers.split(","),
        client_id=client_id,
        graceful_timeout=graceful_timeout,
        logger=logging.getLogger(f"{client_id.replace('-', '.')}.kafka"),
        log_level=logging.DEBUG,
    )
    subscribe(
        broker,
        consumer,
        subscription,
        batch_size=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        fetch_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        group_id=group_id,
    )
    return broker


def subscribe(
    broker: KafkaBroker,
    consumer: BatchConsumer[Any, Any],
    subscription: Subscription,
    *,
    batch_size: int,
    batch_timeout_ms: int,
    fetch_wait_ms: int,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    group_id: str | None = None,
) -> None:
    """``consumer`` as a batch subscriber of ``broker`` to ``subscription``'s topic: its own
    Kafka consumer and group, committing only its own offsets."""
    group = group_id or subscription.group_id
    if group is None:
        raise ValueError(f"{subscription.title}: an at-least-once consumer needs a group_id")
    subscriber = broker.subscriber(
        subscription.topic,
        group_id=group,
        batch=True,
        max_records=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        ack_policy=AckPolicy.MANUAL,
        # A new group must start from the oldest record, not the newest: "latest" would
        # silently skip every event published before the consumer first joined.
        auto_offset_reset="earliest",
        decoder=_no_decoding,
        title=subscription.title,
        description=subscription.description,
    )

    @subscriber
    async def on_batch(message: KafkaMessage) -> None:
        await consumer.handle(message.raw_message, message.consumer)
