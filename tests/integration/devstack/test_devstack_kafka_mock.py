"""librdkafka's mock cluster, reached over TCP by aiokafka like any Kafka broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from pago.common.topics import CHAIN_CURSORS, CHAIN_TRANSFERS, TOPICS
from pago.devstack.kafka_mock import KafkaServer, MockKafkaCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster().start(brokers=1) as mc:
        mc.create_topics()
        yield mc


@pytest.fixture
def lone_cluster() -> Iterator[MockKafkaCluster]:
    """A cluster of its own for a test that takes brokers down."""
    with MockKafkaCluster().start(brokers=1) as mc:
        mc.create_topics()
        yield mc


async def test_pago_topics_are_precreated(cluster: MockKafkaCluster) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap_servers)
    await consumer.start()
    try:
        topics = await consumer.topics()
        for spec in TOPICS:
            assert spec.name in topics
            assert len(consumer.partitions_for_topic(spec.name) or ()) == spec.partitions
    finally:
        await consumer.stop()


async def _first_record_in_a_group(cluster: MockKafkaCluster) -> ConsumerRecord[bytes, bytes]:
    """Produce a record, then read it back through a new consumer group (join included)."""
    key, value = uuid.uuid4().hex.encode(), b'{"v": 1}'
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers)
    await producer.start()
    try:
        sent = await producer.send_and_wait(CHAIN_TRANSFERS, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        CHAIN_TRANSFERS,
        bootstrap_servers=cluster.bootstrap_servers,
        group_id=f"g-{key.decode()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            record = await asyncio.wait_for(consumer.getone(), 30)
            if record.key == key:
                break
    finally:
        await consumer.stop()
    assert (record.partition, record.offset, record.value) == (sent.partition, sent.offset, value)
    return record


async def test_produce_then_consume_in_a_group(cluster: MockKafkaCluster) -> None:
    await _first_record_in_a_group(cluster)


async def test_a_group_joins_without_the_initial_rebalance_wait() -> None:
    # The mock makes a new group wait 3 s for more members unless the devstack lowers it. Raced
    # against a cluster that keeps the default, ours reads first (how long it takes is
    # `make bench`'s business: bench/kafka_mock.py).
    with (
        MockKafkaCluster().start(brokers=1) as lowered,
        MockKafkaCluster(rebalance_delay_ms=None).start(brokers=1) as default,
    ):
        lowered.create_topics()
        default.create_topics()
        finished: list[str] = []

        async def join(name: str, cluster: MockKafkaCluster) -> None:
            await _first_record_in_a_group(cluster)
            finished.append(name)

        await asyncio.gather(join("default", default), join("lowered", lowered))
        assert finished == ["lowered", "default"]


async def test_broker_down_fails_a_produce_and_a_retry_succeeds_after_up(
    lone_cluster: MockKafkaCluster,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=lone_cluster.bootstrap_servers,
        request_timeout_ms=1000,
        retry_backoff_ms=50,
    )
    await producer.start()
    try:
        await producer.send_and_wait(CHAIN_CURSORS, b"before", key=b"k")
        lone_cluster.broker_down(1)
        with pytest.raises(KafkaError):
            await producer.send_and_wait(CHAIN_CURSORS, b"while-down", key=b"k")

        pending = await producer.send(CHAIN_CURSORS, b"retried", key=b"k")
        await asyncio.sleep(0.2)
        assert not pending.done()  # still retrying against the dead broker
        lone_cluster.broker_up(1)
        delivered = await asyncio.wait_for(pending, 10)
        assert delivered.offset >= 1
    finally:
        await producer.stop()


def test_external_bootstrap_servers_start_no_mock() -> None:
    server = KafkaServer.start(env={"KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1:9092"})
    assert server.external
    assert server.cluster is None
    assert server.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    server.close()


def test_closed_cluster_refuses_use() -> None:
    mc = MockKafkaCluster().start()
    mc.close()
    mc.close()  # idempotent
    with pytest.raises(RuntimeError):
        _ = mc.bootstrap_servers
