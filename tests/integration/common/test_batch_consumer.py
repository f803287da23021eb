"""``pago.common.consumer.BatchConsumer`` against a real Kafka-protocol broker (the devstack's
mock cluster): a failed batch that spans several partitions, one of them revoked while it was
applied, is rewound where the consumer still owns it (the copy the notifier had raised out of
its rewind at the revoked partition); a rewind that fails on a partition it owns halts the
consumer, so no later commit skips the failed batch's records.

The parse and apply steps are the test's own (records become ``(partition, offset)`` pairs and
"applying" appends them to a list), so what is checked is the consumer's offset handling alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from pago.common.consumer import AioKafkaPort, BatchConsumer, ConsumerMetrics
from pago.common.deadletter import DeadLetterWriter
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer

P0, P1, P2 = (TopicPartition(CHECKOUT_SESSIONS, p) for p in range(3))
Applied = tuple[int, int]
"""(partition, offset) of a record whose work was committed."""


def metrics() -> ConsumerMetrics:
    registry = CollectorRegistry()
    return ConsumerMetrics(
        batch_failures=Counter("batch_failures", "-", registry=registry),
        commit_failures=Counter("commit_failures", "-", registry=registry),
    )


async def produce(producer: AIOKafkaProducer, partition: TopicPartition, count: int) -> None:
    for i in range(count):
        await producer.send_and_wait(
            partition.topic, f"p{partition.partition}-{i}".encode(), partition=partition.partition
        )


async def poll(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[Any, Any]]:
    """At least ``count`` records, in partition order (as one poll would hand them over)."""
    records: list[ConsumerRecord[Any, Any]] = []
    async with asyncio.timeout(20):
        while len(records) < count:
            fetched = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in fetched.values() for r in rs)
    return sorted(records, key=lambda r: (r.partition, r.offset))


class SeekFails:
    """The aiokafka consumer, except that seeking ``partition`` raises though it is assigned."""

    def __init__(self, consumer: AIOKafkaConsumer, partition: TopicPartition) -> None:
        self._consumer = consumer
        self._partition = partition

    def assignment(self) -> set[TopicPartition]:
        return cast(set[TopicPartition], self._consumer.assignment())

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition == self._partition:
            raise KafkaError("the client could not seek")
        self._consumer.seek(partition, offset)

    async def commit(self, offsets: Any) -> None:
        await self._consumer.commit(offsets)


@pytest.fixture
async def producer(broker: KafkaServer) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def consumer(broker: KafkaServer) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"batch-consumer-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    consumer.assign([P0, P1, P2])
    try:
        yield consumer
    finally:
        await consumer.stop()


@pytest.fixture
async def deadletters(broker: KafkaServer) -> AsyncIterator[DeadLetterWriter]:
    writer = DeadLetterWriter.create(broker.bootstrap_servers, "batch-consumer-test")
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


class TestRewind:
    async def test_a_revoked_partition_never_stops_the_others_rewinding(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        deadletters: DeadLetterWriter,
    ) -> None:
        applied: list[Applied] = []
        revoke = [P1]

        def parse(record: ConsumerRecord[Any, Any]) -> Applied:
            return (record.partition, record.offset)

        async def apply(events: Sequence[Applied]) -> None:
            if revoke:
                # A rebalance while the batch was being applied: P1 went to another member
                # (sorted before P2 in the batch, so a rewind that stops at it misses P2).
                consumer.assign([P0, P2])
                revoke.clear()
                raise ConnectionError("the database went away before COMMIT")
            applied.extend(events)

        batches: BatchConsumer[Applied, None] = BatchConsumer(
            parse=parse,
            apply=apply,
            deadletters=deadletters,
            metrics=metrics(),
            first_backoff=0.01,
            max_backoff=0.01,
        )
        for partition in (P0, P1, P2):
            await produce(producer, partition, 2)

        failed = await poll(consumer, 6)
        assert {r.partition for r in failed} == {0, 1, 2}
        await batches.handle(failed, consumer)
        assert applied == []
        assert not batches.halted, "a revoked partition is not a failed rewind"

        # More records behind the failed ones: the next commit of P0 and P2 covers them too.
        await produce(producer, P0, 1)
        await produce(producer, P2, 1)
        async with asyncio.timeout(20):
            while (await consumer.committed(P0), await consumer.committed(P2)) != (3, 3):
                fetched = await consumer.getmany(timeout_ms=200)
                await batches.handle([r for rs in fetched.values() for r in rs], consumer)

        assert sorted(set(applied)) == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)], (
            "a commit skipped records of the failed batch"
        )
        # Never committed past its failed records: its new owner starts from them.
        assert await consumer.committed(P1) is None

    async def test_a_rewind_that_fails_where_it_owns_the_partition_halts(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        deadletters: DeadLetterWriter,
    ) -> None:
        applied: list[Applied] = []
        failures = [1]
        halted: list[bool] = []

        async def apply(events: Sequence[Applied]) -> None:
            if failures:
                failures.clear()
                raise ConnectionError("the database went away before COMMIT")
            applied.extend(events)

        seek_fails = cast(AIOKafkaConsumer, SeekFails(consumer, P1))
        batches: BatchConsumer[Applied, None] = BatchConsumer(
            parse=lambda record: (record.partition, record.offset),
            apply=apply,
            deadletters=deadletters,
            metrics=metrics(),
            first_backoff=0.01,
            max_backoff=0.01,
            port=lambda _: AioKafkaPort(seek_fails),
            on_halt=lambda: halted.append(True),
        )
        for partition in (P0, P1, P2):
            await produce(producer, partition, 2)
        await batches.handle(await poll(consumer, 6), consumer)
        assert halted == [True]
        assert batches.halted

        # P2 was never sought back: its next poll starts after the failed records. Reading
        # on would commit past them; a halted consumer takes no batch at all.
        await produce(producer, P2, 1)
        later = await poll(consumer, 1)
        assert (2, 0) not in [(r.partition, r.offset) for r in later]
        await batches.handle(later, consumer)

        assert applied == []
        assert [await consumer.committed(tp) for tp in (P0, P1, P2)] == [None, None, None]
