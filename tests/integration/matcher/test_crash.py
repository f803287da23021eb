"""SIGKILL the matcher at random moments while 1,000 transfers flow; restart it each time.

Afterwards every transfer is recorded exactly once and credited exactly once: each session's
``amount_received`` is the sum of its distinct transfers, and its ``version`` (one per applied
decision) equals their count — a transfer applied twice would show in both.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import checkout_sessions
from pago.common.events import TransferObserved
from pago.common.topics import CHAIN_TRANSFERS
from tests.integration.matcher.process import MatcherProcess
from tests.support.kafka import caught_up
from tests.support.matcher import (
    USDT,
    SessionSpec,
    evm_address,
    insert_merchant,
    publish,
    transfer,
)

SESSIONS = 200
PER_SESSION = 5
TRANSFERS = SESSIONS * PER_SESSION
KILLS = 4


async def _sessions(engine: AsyncEngine, run: str) -> list[SessionSpec]:
    async with engine.begin() as conn:
        merchant = await insert_merchant(conn)
        specs = [
            SessionSpec(
                merchant_id=merchant,
                id=f"cs_crash_{run}_{i:04d}",
                pay_address=evm_address(f"crash:{run}:{i}"),
                # Never reached: every transfer credits and none is parked as an exception.
                amount_expected=10_000_000 * USDT,
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
            for i in range(SESSIONS)
        ]
        await conn.execute(
            insert(checkout_sessions),
            [
                {
                    "id": s.id,
                    "merchant_id": merchant,
                    "mode": s.mode.value,
                    "status": "Pending",
                    "network": s.network.value,
                    "currency": s.currency.value,
                    "currency_contract": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
                    "decimals": s.decimals,
                    "amount_expected": s.amount_expected,
                    "pay_address": s.pay_address,
                    "pricing_currency": "USDT",
                    "pricing_amount": "10000000",
                    "exchange_rate": 1,
                    "expires_at": s.expires_at,
                }
                for s in specs
            ],
        )
    return specs


async def _recorded(engine: AsyncEngine, run: str) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM session_transactions WHERE session_id LIKE :p"),
            {"p": f"cs_crash_{run}_%"},
        )
        return int(result.scalar_one())


async def _flow(producer: AIOKafkaProducer, transfers: list[TransferObserved]) -> None:
    """Produce in small bursts, with some transfers sent twice (a watcher's redelivery)."""
    rng = random.Random(7)
    for start in range(0, len(transfers), 25):
        chunk = transfers[start : start + 25]
        await publish(producer, *chunk, *rng.sample(chunk, 3))
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_no_transfer_is_lost_or_credited_twice_across_sigkills(
    db: AsyncEngine, server_env: dict[str, str], producer: AIOKafkaProducer, run_id: str
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    sessions = await _sessions(db, run_id)
    transfers = [
        transfer(s, (i + 1) * USDT + rng.randrange(1000), tag=f"{run_id}:{s.id}:{i}")
        for i in range(PER_SESSION)
        for s in sessions
    ]
    expected = {s.id: 0 for s in sessions}
    for t, s in zip(transfers, [s for _ in range(PER_SESSION) for s in sessions], strict=True):
        expected[s.id] += t.amount_raw
    env = {**server_env, "PAGO_MATCHER_BATCH_SIZE": "50"}
    group = f"pago-matcher-crash-{run_id}"  # restarts of one deployment share its group

    flow = asyncio.create_task(_flow(producer, transfers))
    kills = []
    for _ in range(KILLS):
        matcher = MatcherProcess(env, group_id=group)
        try:
            await asyncio.to_thread(matcher.started)
            # Kill it mid-work: once it has made progress, after a random slice of a second.
            before = await _recorded(db, run_id)
            for _ in range(500):
                if await _recorded(db, run_id) > before or flow.done():
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            kills.append(await _recorded(db, run_id))
        finally:
            matcher.kill()
            matcher.close()
    await flow

    final = MatcherProcess(env, group_id=group)
    try:
        await asyncio.to_thread(final.started)
        for _ in range(600):
            if await _recorded(db, run_id) >= TRANSFERS:
                break
            await asyncio.sleep(0.05)
        # Nothing is left to apply twice once the group has committed the end of every
        # partition: a late duplicate would have landed before that commit.
        await caught_up(server_env["KAFKA_BOOTSTRAP_SERVERS"], group, CHAIN_TRANSFERS, timeout=60)
        assert await asyncio.to_thread(final.terminate) == 0
    finally:
        final.close()

    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT s.id, s.amount_received, s.version, s.status,
                           count(t.id) AS txs, count(t.id) FILTER (WHERE t.credited) AS credited,
                           coalesce(sum(t.amount), 0) AS total
                    FROM checkout_sessions s
                    LEFT JOIN session_transactions t ON t.session_id = s.id
                    WHERE s.id LIKE :p
                    GROUP BY s.id
                    """
                ),
                {"p": f"cs_crash_{run_id}_%"},
            )
        ).all()
    context = f"seed {seed}, rows recorded at each kill: {kills}"
    assert kills[-1] > 0, f"every kill came before any work ({context})"
    assert len(rows) == SESSIONS, context
    assert sum(r.txs for r in rows) == TRANSFERS, f"lost or extra transfers ({context})"
    for r in rows:
        assert (r.txs, r.credited) == (PER_SESSION, PER_SESSION), f"{r.id} ({context})"
        assert r.amount_received == expected[r.id] == r.total, f"{r.id} ({context})"
        assert r.version == PER_SESSION, f"{r.id} applied a transfer twice ({context})"
        assert r.status == "Underpaid"
