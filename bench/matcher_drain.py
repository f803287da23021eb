"""Matcher drain: 50,000 queued transfers for 50,000 sessions, beside a raw Postgres floor.

The sessions are inserted with one SQL statement, the transfers produced to chain.transfers
before the matcher starts; the clock runs from ``start()`` of the real composition root (AML
level 1 on, outbox relay in-process, as deployed) until every session is ``Paid``. The floor is
the same two writes per transfer — insert the transaction row, update the session — as bare
batched SQL in transactions of the matcher's batch size, on the same database, in the same run.
``matcher_cpu_ms_per_1000`` is the consumer thread's CPU time (the relay has its own thread): on a
shared machine it moves far less than the wall-clock rate does.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import Servers
from pago.common.db.engine import create_engine
from pago.common.enums import Mode, Network, Token, TransferStage
from pago.common.events import TransferObserved
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_TRANSFERS, transfer_key
from pago.matcher.app import create_app
from pago.matcher.settings import MatcherSettings

TRANSFERS = 50_000
BATCH = 1_000
AMOUNT = 10 * 10**6
"""10 USDT: each transfer pays its session in full."""
SENDERS = 100
_AML_DIR = Path(os.environ.get("PAGO_AML_LIST_PATH", "/work/shared/data/aml"))
AML_DIR = str(_AML_DIR) if _AML_DIR.is_dir() else None
"""The OFAC snapshot when present: level 1 screens every sender, as in production."""
TARGET = 3_000


def _address(i: int) -> str:
    return f"0x{i:040x}"


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE outbox, payment_exceptions, session_transactions, checkout_sessions, "
                "merchants CASCADE"
            )
        )
        await conn.execute(text("INSERT INTO merchants (id, name) VALUES ('mer_bench', 'Bench')"))
        await conn.execute(
            text(
                """
                INSERT INTO checkout_sessions (
                    id, merchant_id, mode, status, network, currency, currency_contract,
                    decimals, amount_expected, pay_address, pricing_currency, pricing_amount,
                    exchange_rate, expires_at
                )
                SELECT 'cs_bench_' || i, 'mer_bench', 'test', 'Pending', 'ETHEREUM', 'USDT',
                       '0xdAC17F958D2ee523a2206206994597C13D831ec7', 6, :amount,
                       '0x' || lpad(to_hex(i), 40, '0'), 'USDT', '10', 1,
                       now() + interval '1 day'
                FROM generate_series(0, :n - 1) AS i
                """
            ),
            {"amount": AMOUNT, "n": TRANSFERS},
        )
        await conn.execute(text("ANALYZE checkout_sessions"))


def _transfers() -> list[TransferObserved]:
    now = datetime.now(UTC)
    return [
        TransferObserved(
            network=Network.ETHEREUM,
            mode=Mode.TEST,
            token=Token.USDT,
            contract="0xdAC17F958D2ee523a2206206994597C13D831ec7",
            tx_hash=f"0x{i:064x}",
            log_index=0,
            block_number=1_000 + i // 100,
            block_hash=f"0x{i // 100:064x}",
            from_address=f"0x{(i % SENDERS) + 1:040x}",
            to_address=_address(i),
            amount_raw=AMOUNT,
            decimals=6,
            confirmations=12,
            stage=TransferStage.CONFIRMED,
            observed_at=now,
        )
        for i in range(TRANSFERS)
    ]


async def _produce(servers: Servers, transfers: list[TransferObserved]) -> float:
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-matcher")
    await producer.start()
    started = time.perf_counter()
    try:
        acks = [
            await producer.send(
                CHAIN_TRANSFERS,
                t.to_bytes(),
                key=transfer_key(t.network.value, t.to_address).encode(),
            )
            for t in transfers
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _paid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM checkout_sessions WHERE status = 'Paid'")
        )
        return int(result.scalar_one())


def _batches() -> tuple[float, float]:
    """(batches, records) the matcher's batch histogram has seen in this process."""
    count = REGISTRY.get_sample_value("pago_matcher_batch_records_count") or 0.0
    total = REGISTRY.get_sample_value("pago_matcher_batch_records_sum") or 0.0
    return count, total


async def _drain(servers: Servers, engine: AsyncEngine) -> dict[str, Any]:
    settings = MatcherSettings.model_validate(
        {
            "database_url": servers.database_url,
            "redis_url": servers.redis_url,
            "kafka_bootstrap_servers": servers.kafka_bootstrap_servers,
            "http_port": 0,
            "batch_size": BATCH,
            "aml_list_path": AML_DIR,
            "log_level": "WARNING",
        }
    )
    app = create_app(settings)
    batches_before, records_before = _batches()
    async with engine.connect() as conn:
        t0 = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    started = time.perf_counter()
    cpu_started = time.thread_time()
    await app.start()
    try:
        # Poll slowly (a count over 50,000 rows is work too) and take the finishing time from
        # the last session write, not from when the poll noticed.
        while (paid := await _paid(engine)) < TRANSFERS:
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"only {paid} of {TRANSFERS} sessions paid after 300 s")
            await asyncio.sleep(0.5)
        cpu = time.thread_time() - cpu_started
        async with engine.connect() as conn:
            t1 = (
                await conn.execute(text("SELECT max(updated_at) FROM checkout_sessions"))
            ).scalar_one()
            backlog = int((await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one())
    finally:
        await app.stop()
    batches, records = (
        a - b for a, b in zip(_batches(), (batches_before, records_before), strict=True)
    )
    return {
        "seconds": (t1 - t0).total_seconds(),
        "outbox_backlog_at_end": backlog,
        "mean_batch": records / batches if batches else 0.0,
        "cpu_s": cpu,
    }


async def _floor(engine: AsyncEngine) -> float:
    """The same essential writes as bare batched SQL: no Kafka, no domain, no events."""
    ids = [f"cs_bench_{i}" for i in range(TRANSFERS)]
    started = time.perf_counter()
    for start in range(0, TRANSFERS, BATCH):
        chunk = range(start, min(start + BATCH, TRANSFERS))
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO session_transactions (
                        session_id, network, tx_hash, log_index, token, contract, amount,
                        decimals, from_address, block_number, block_hash, status, credited
                    )
                    SELECT s, 'ETHEREUM', h, 0, 'USDT', 'c', :amount, 6, 'f', 1, 'b',
                           'Confirmed', true
                    FROM unnest(CAST(:ids AS text[]), CAST(:hashes AS text[])) AS u(s, h)
                    """
                ),
                {
                    "amount": AMOUNT,
                    "ids": [ids[i] for i in chunk],
                    "hashes": [f"0xfloor{i:058x}" for i in chunk],
                },
            )
            await conn.execute(
                text(
                    """
                    UPDATE checkout_sessions AS s SET
                        status = 'Paid', amount_received = v.amount, fee_amount = 1000000,
                        net_amount = v.amount - 1000000, version = s.version + 1,
                        updated_at = now()
                    FROM unnest(CAST(:ids AS text[]), CAST(:amounts AS numeric[]))
                      AS v(id, amount)
                    WHERE s.id = v.id
                    """
                ),
                {"ids": [ids[i] for i in chunk], "amounts": [Decimal(AMOUNT)] * len(chunk)},
            )
    return TRANSFERS / (time.perf_counter() - started)


async def run(servers: Servers) -> dict[str, Any]:
    engine = create_engine(servers.database_url, pool_size=2)
    try:
        await _reset(engine)
        produce_s = await _produce(servers, _transfers())
        drained = await _drain(servers, engine)
        rate = TRANSFERS / drained["seconds"]
        await _reset(engine)
        floor = await _floor(engine)
    finally:
        await engine.dispose()
    return {
        "transfers": TRANSFERS,
        "sessions": TRANSFERS,
        "batch_size": BATCH,
        "aml_level_1": AML_DIR is not None,
        "produce_s": round(produce_s, 2),
        "drain_s": round(drained["seconds"], 2),
        "matcher_transfers_per_s": round(rate),
        "mean_batch_records": round(drained["mean_batch"]),
        "matcher_cpu_ms_per_1000": round(1000 * drained["cpu_s"] / (TRANSFERS / 1000)),
        "outbox_backlog_at_end": drained["outbox_backlog_at_end"],
        "floor_batched_update_per_s": round(floor),
        "matcher_vs_floor": round(rate / floor, 3),
        "target_transfers_per_s": TARGET,
    }
