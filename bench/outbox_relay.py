"""Outbox relay throughput beside a raw aiokafka producer, same broker, same messages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from bench.harness import Servers
from pago.common.db.engine import create_engine
from pago.common.kafka import create_producer
from pago.common.outbox import OutboxMessage, OutboxRelay, enqueue
from pago.common.topics import CHECKOUT_SESSIONS

MESSAGES = 50_000
KEYS = 5_000
PAYLOAD = b'{"type":"session.updated","v":1,' + b'"pad":"' + b"x" * 900 + b'"}'
"""About the size of a session.updated event carrying a full session snapshot."""


async def _raw_producer(servers: Servers) -> float:
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-raw")
    await producer.start()
    try:
        # Warm up: metadata, connections and the partitions' leaders are known before timing.
        await asyncio.gather(
            *[await producer.send(CHECKOUT_SESSIONS, PAYLOAD, key=b"warm") for _ in range(1_000)]
        )
        started = time.perf_counter()
        acks = [
            await producer.send(
                CHECKOUT_SESSIONS, PAYLOAD, key=f"raw:{i % KEYS}".encode(), headers=[("v", b"1")]
            )
            for i in range(MESSAGES)
        ]
        await asyncio.gather(*acks)
        return MESSAGES / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _relay(servers: Servers) -> float:
    engine = create_engine(servers.database_url, pool_size=2)
    messages = [
        OutboxMessage(CHECKOUT_SESSIONS, f"relay:{i % KEYS}", PAYLOAD, {"v": "1"})
        for i in range(MESSAGES)
    ]
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE outbox"))
    for start in range(0, MESSAGES, 5_000):
        async with engine.begin() as conn:
            await enqueue(conn, messages[start : start + 5_000])
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-relay")
    await producer.start()
    try:
        await asyncio.gather(
            *[await producer.send(CHECKOUT_SESSIONS, PAYLOAD, key=b"warm") for _ in range(1_000)]
        )
        relay = OutboxRelay(engine, producer, batch_size=2_000)
        started = time.perf_counter()
        sent = await relay.drain()
        elapsed = time.perf_counter() - started
        assert sent == MESSAGES, f"relay sent {sent} of {MESSAGES}"
        return MESSAGES / elapsed
    finally:
        await producer.stop()
        await engine.dispose()


async def run(servers: Servers) -> dict[str, Any]:
    raw = await _raw_producer(servers)
    relay = await _relay(servers)
    return {
        "messages": MESSAGES,
        "payload_bytes": len(PAYLOAD),
        "raw_producer_msgs_per_s": round(raw),
        "relay_msgs_per_s": round(relay),
        "relay_vs_raw": round(relay / raw, 3),
        "target_relay_vs_raw": 0.5,
    }
