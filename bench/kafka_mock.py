"""The embedded Kafka mock: how long a cluster takes to start and a new group to read its first
record (the tests only check that the devstack's lowered rebalance delay wins a race)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import Servers
from pago.common.topics import CHAIN_TRANSFERS
from pago.devstack.kafka_mock import MockKafkaCluster

ROUNDS = 5


async def _first_record_seconds(bootstrap: str) -> float:
    key = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(CHAIN_TRANSFERS, b"{}", key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        CHAIN_TRANSFERS,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{key.decode()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    started = time.perf_counter()
    await consumer.start()
    try:
        while (await consumer.getone()).key != key:
            pass
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def run(servers: Servers) -> dict[str, Any]:
    starts, joins = [], []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        with MockKafkaCluster().start(brokers=1) as cluster:
            cluster.create_topics()
            starts.append(time.perf_counter() - began)
            joins.append(await _first_record_seconds(cluster.bootstrap_servers))
    return {
        "cluster_start_seconds_max": round(max(starts), 4),
        "group_first_record_seconds_max": round(max(joins), 4),
        "rounds": ROUNDS,
    }
