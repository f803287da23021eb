"""The outbox against real Postgres and a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import outbox
from pago.common.kafka import create_producer
from pago.common.outbox import OutboxMessage, OutboxRelay, enqueue
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from tests.support.kafka import read_topic
from tests.support.processes import ServiceProcess, module

Records = list[ConsumerRecord[bytes, bytes]]


def _messages(run_id: str, keys: int, per_key: int) -> list[OutboxMessage]:
    # Interleave keys so that per-key order is not an accident of insertion order.
    return [
        OutboxMessage(
            CHECKOUT_SESSIONS, f"{run_id}:k{k}", json.dumps({"k": k, "seq": s}).encode(), {"t": "x"}
        )
        for s in range(per_key)
        for k in range(keys)
    ]


async def _insert(engine: AsyncEngine, messages: list[OutboxMessage], chunk: int = 2000) -> None:
    for start in range(0, len(messages), chunk):
        async with engine.begin() as conn:
            await enqueue(conn, messages[start : start + chunk])


async def _unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(outbox))
        return int(result.scalar_one())


def _distinct_in_order(records: Records) -> dict[str, list[int]]:
    """Per key, the sequence numbers in first-seen order (duplicates are allowed, loss is not)."""
    seen: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        assert rec.value is not None
        seq = json.loads(rec.value)["seq"]
        key = rec.key.decode() if rec.key else ""
        if seq not in seen[key]:
            seen[key].append(seq)
    return seen


def _all_in_order(keys: int, per_key: int) -> object:
    def check(records: Records) -> bool:
        seen = _distinct_in_order(records)
        return len(seen) == keys and all(len(v) == per_key for v in seen.values())

    return check


class TestEnqueue:
    async def test_rolled_back_change_leaves_no_event(self, db: AsyncEngine, run_id: str) -> None:
        async def failing_change() -> None:
            async with db.begin() as conn:
                await enqueue(conn, _messages(run_id, 1, 3))
                raise RuntimeError("the state change failed")

        with pytest.raises(RuntimeError):
            await failing_change()
        assert await _unsent(db) == 0

    async def test_committed_change_leaves_its_events(self, db: AsyncEngine, run_id: str) -> None:
        async with db.begin() as conn:
            await enqueue(conn, _messages(run_id, 2, 3))
        assert await _unsent(db) == 6


class TestRelay:
    async def test_publishes_in_order_per_key_and_marks_sent(
        self, db: AsyncEngine, kafka: KafkaServer, run_id: str
    ) -> None:
        await _insert(db, _messages(run_id, keys=7, per_key=40))
        producer = create_producer(kafka.bootstrap_servers)
        await producer.start()
        try:
            sent = await OutboxRelay(db, producer, batch_size=33).drain()
        finally:
            await producer.stop()
        assert sent == 280
        assert await _unsent(db) == 0
        records = await read_topic(
            kafka.bootstrap_servers,
            CHECKOUT_SESSIONS,
            key_prefix=run_id,
            until=lambda r: len(r) >= 280,
        )
        assert len(records) == 280  # no duplicates without a crash
        assert all(seqs == list(range(40)) for seqs in _distinct_in_order(records).values())
        assert records[0].headers == (("t", b"x"),)

    async def test_tombstones_are_published_as_null_values(
        self, db: AsyncEngine, kafka: KafkaServer, run_id: str
    ) -> None:
        async with db.begin() as conn:
            await enqueue(conn, [OutboxMessage.tombstone(CHECKOUT_SESSIONS, f"{run_id}:gone")])
        producer = create_producer(kafka.bootstrap_servers)
        await producer.start()
        try:
            assert await OutboxRelay(db, producer).drain() == 1
        finally:
            await producer.stop()
        records = await read_topic(
            kafka.bootstrap_servers,
            CHECKOUT_SESSIONS,
            key_prefix=run_id,
            until=lambda r: len(r) >= 1,
        )
        assert records[0].value is None

    async def test_several_relays_keep_order_per_key(
        self, db: AsyncEngine, kafka: KafkaServer, run_id: str
    ) -> None:
        await _insert(db, _messages(run_id, keys=20, per_key=100))
        producers = [create_producer(kafka.bootstrap_servers) for _ in range(3)]
        await asyncio.gather(*(p.start() for p in producers))
        try:
            relays = [OutboxRelay(db, p, batch_size=50) for p in producers]
            sent = await asyncio.gather(*(r.drain() for r in relays))
        finally:
            await asyncio.gather(*(p.stop() for p in producers))
        assert sum(sent) == 2000
        assert await _unsent(db) == 0
        records = await read_topic(
            kafka.bootstrap_servers,
            CHECKOUT_SESSIONS,
            key_prefix=run_id,
            until=_all_in_order(20, 100),  # type: ignore[arg-type]
        )
        assert len(records) == 2000
        assert all(seqs == list(range(100)) for seqs in _distinct_in_order(records).values())

    async def test_broker_outage_keeps_rows_until_acked(
        self, db: AsyncEngine, kafka: KafkaServer, run_id: str
    ) -> None:
        if kafka.cluster is None:
            pytest.fail("this test injects broker faults and needs the embedded mock cluster")
        await _insert(db, _messages(run_id, keys=2, per_key=5))
        producer = create_producer(kafka.bootstrap_servers)
        await producer.start()
        kafka.cluster.broker_down(1)
        try:
            relay = OutboxRelay(db, producer)
            with pytest.raises(Exception):  # noqa: B017, PT011 - any send failure will do
                await asyncio.wait_for(relay.publish_batch(), timeout=3)
            assert await _unsent(db) == 10
        finally:
            kafka.cluster.broker_up(1)
        try:
            assert await OutboxRelay(db, producer).drain() == 10
        finally:
            await producer.stop()
        assert await _unsent(db) == 0


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing_and_keeps_order(
    db: AsyncEngine, kafka: KafkaServer, run_id: str, server_env: dict[str, str]
) -> None:
    keys, per_key = 50, 200
    await _insert(db, _messages(run_id, keys, per_key))
    cmd = module("pago.common.outbox")
    env = {**server_env, "PAGO_LOG_LEVEL": "WARNING"}
    relay = ServiceProcess("relay", cmd, env)
    try:
        # Kill it once it has published part of the stream, not before and not after.
        for _ in range(600):
            await asyncio.sleep(0.01)
            if 0 < (await _unsent(db)) < keys * per_key - 500:
                break
        relay.kill()
        relay.close()
        left_after_kill = await _unsent(db)
        assert 0 < left_after_kill < keys * per_key, "the kill must land mid-stream"
        relay = ServiceProcess("relay", cmd, env)
        for _ in range(3000):
            if await _unsent(db) == 0:
                break
            await asyncio.sleep(0.01)
        assert await _unsent(db) == 0
    finally:
        try:
            assert relay.terminate(timeout=15) == 0
        finally:
            relay.close()
    records = await read_topic(
        kafka.bootstrap_servers,
        CHECKOUT_SESSIONS,
        key_prefix=run_id,
        until=_all_in_order(keys, per_key),  # type: ignore[arg-type]
        timeout=60,
    )
    seen = _distinct_in_order(records)
    assert len(seen) == keys
    assert all(seqs == list(range(per_key)) for seqs in seen.values())
