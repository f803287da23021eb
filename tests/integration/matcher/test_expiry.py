"""The expiry scheduler: batched, safe beside replicas and the consumer, losing to a payment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.enums import Mode, Network, SessionStatus
from pago.common.events import ChainScanned, SessionUpdated
from pago.matcher import jobs
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.support.matcher import (
    BASE_URL,
    USDT,
    exceptions,
    new_session,
    outbox_events,
    session_row,
    transfer,
)

PAST = timedelta(minutes=1)
PARTITIONS = 12


async def chain_silent_until(engine: AsyncEngine, block_time: datetime) -> None:
    """Record, through the consumer's own code path, a watcher's progress round at
    ``block_time`` on every partition (ETHEREUM test)."""
    markers = [
        ChainScanned(
            network=Network.ETHEREUM,
            mode=Mode.TEST,
            block_number=1,
            block_hash="0x01",
            block_time=block_time,
            partition=p,
            partitions=PARTITIONS,
            scanned_at=block_time,
        )
        for p in range(PARTITIONS)
    ]
    async with engine.begin() as conn:
        await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn, [], {}, block_time, markers=markers
        )


async def expire(engine: AsyncEngine, limit: int = 100) -> int:
    """An expiry pass with the chain proven silent up to now: only the clock decides."""
    now = datetime.now(UTC)
    await chain_silent_until(engine, now)
    return await jobs.expire_due(engine, now=now, limit=limit, checkout_base_url=BASE_URL)


class TestExpireDue:
    async def test_payable_sessions_past_their_time_expire_and_say_so(
        self, db: AsyncEngine
    ) -> None:
        pending = await new_session(db, expires_at=datetime.now(UTC) - PAST)
        underpaid = await new_session(
            db, status=SessionStatus.UNDERPAID, expires_at=datetime.now(UTC) - PAST
        )
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE checkout_sessions SET amount_received = :a WHERE id = :id"),
                {"a": 4 * USDT, "id": underpaid.id},
            )
        later = await new_session(db, expires_at=datetime.now(UTC) + PAST)
        paid = await new_session(db, status=SessionStatus.PAID, expires_at=datetime.now(UTC) - PAST)

        assert await expire(db) == 2

        for session, received in ((pending, 0), (underpaid, 4 * USDT)):
            row = await session_row(db, session.id)
            assert (row["status"], row["amount_received"], row["fee_amount"]) == (
                "Expired",
                received,
                0,
            )
            [event] = await outbox_events(db, session.id)
            assert isinstance(event, SessionUpdated)
            assert event.session.status is SessionStatus.EXPIRED
            assert event.previous_status is session.status
        assert (await session_row(db, later.id))["status"] == "Pending"
        assert (await session_row(db, paid.id))["status"] == "Paid"
        assert await expire(db) == 0

    async def test_it_works_in_batches(self, db: AsyncEngine) -> None:
        for _ in range(5):
            await new_session(db, expires_at=datetime.now(UTC) - PAST)

        assert [await expire(db, limit=2) for _ in range(4)] == [2, 2, 1, 0]

    async def test_replicas_split_the_work_and_expire_each_session_once(
        self, db: AsyncEngine
    ) -> None:
        sessions = [await new_session(db, expires_at=datetime.now(UTC) - PAST) for _ in range(30)]

        done = await asyncio.gather(*(expire(db, limit=7) for _ in range(4)))
        while sum(done) < 30 and (more := await expire(db, limit=7)):
            done.append(more)

        assert sum(done) == 30
        for session in sessions:
            assert len(await outbox_events(db, session.id)) == 1


class TestAgainstAPayment:
    async def test_a_payment_in_flight_wins(self, db: AsyncEngine) -> None:
        session = await new_session(db, expires_at=datetime.now(UTC) - PAST)
        matcher = TransferMatcher(checkout_base_url=BASE_URL)
        payment = transfer(session, 10 * USDT)

        async with db.begin() as consumer:
            # The consumer has the session locked and is crediting it right now.
            outcome = await matcher.apply(
                consumer, [payment], {sender(payment): AmlVerdict.clear()}, datetime.now(UTC)
            )
            assert await expire(db) == 0, "the scheduler waited for or overrode the payment"
        outcome.committed()

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Paid", 10 * USDT)
        assert await expire(db) == 0

    async def test_a_payment_after_the_expiry_is_a_late_payment(self, db: AsyncEngine) -> None:
        session = await new_session(db, expires_at=datetime.now(UTC) - PAST)
        assert await expire(db) == 1
        payment = transfer(session, 10 * USDT)

        async with db.begin() as conn:
            await TransferMatcher(checkout_base_url=BASE_URL).apply(
                conn, [payment], {sender(payment): AmlVerdict.clear()}, datetime.now(UTC)
            )

        assert (await session_row(db, session.id))["status"] == "Expired"
        [case] = await exceptions(db, session.id)
        assert case["kind"] == "late_payment"
