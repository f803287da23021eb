"""The matcher's side of the Resolution API: requested actions applied by the domain's rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.enums import ExceptionKind, SessionStatus, TransferStage
from pago.common.events import SessionResolved, SessionUpdated
from pago.matcher import jobs
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.support.matcher import (
    BASE_URL,
    USDT,
    SessionSpec,
    clear_outbox,
    exceptions,
    new_session,
    outbox_events,
    session_row,
    transfer,
)


async def pay(engine: AsyncEngine, session: SessionSpec, *transfers: Any) -> None:
    async with engine.begin() as conn:
        await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn,
            list(transfers),
            {sender(t): AmlVerdict.clear() for t in transfers},
            datetime.now(UTC),
        )


async def request(engine: AsyncEngine, exception_id: str, action: str) -> None:
    """What ``POST /v1/payment_exceptions/{id}/resolve`` records."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE payment_exceptions SET requested_action = :a, requested_at = now(), "
                "resolution_note = 'by the test' WHERE id = :id"
            ),
            {"a": action, "id": exception_id},
        )


async def resolve(engine: AsyncEngine) -> int:
    return await jobs.apply_requested_resolutions(
        engine, now=datetime.now(UTC), limit=100, checkout_base_url=BASE_URL
    )


async def expired_session(engine: AsyncEngine) -> SessionSpec:
    return await new_session(
        engine, status=SessionStatus.EXPIRED, expires_at=datetime.now(UTC) - timedelta(hours=1)
    )


class TestAccept:
    async def test_a_late_full_payment_makes_the_session_paid(self, db: AsyncEngine) -> None:
        session = await expired_session(db)
        await pay(db, session, transfer(session, 10 * USDT))
        [case] = await exceptions(db, session.id)
        await clear_outbox(db)

        await request(db, case["id"], "accept")
        assert await resolve(db) == 1

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"], row["fee_amount"]) == (
            "Paid",
            10 * USDT,
            USDT,
        )
        [case] = await exceptions(db, session.id)
        assert (case["status"], case["requested_action"], case["resolution_note"]) == (
            "accepted",
            None,
            "by the test",
        )
        assert case["resolved_at"] is not None
        resolved, updated = await outbox_events(db, session.id)
        assert isinstance(resolved, SessionResolved)
        assert (resolved.exception_id, resolved.exception_kind) == (
            case["id"],
            ExceptionKind.LATE_PAYMENT,
        )
        assert resolved.session.status is SessionStatus.PAID
        assert isinstance(updated, SessionUpdated)
        assert updated.previous_status is SessionStatus.EXPIRED
        assert await resolve(db) == 0

    async def test_a_short_late_payment_credits_but_stays_expired(self, db: AsyncEngine) -> None:
        session = await expired_session(db)
        await pay(db, session, transfer(session, 4 * USDT))
        [case] = await exceptions(db, session.id)

        await request(db, case["id"], "accept")
        await resolve(db)

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"], row["fee_amount"]) == (
            "Expired",
            4 * USDT,
            0,
        )

    async def test_an_accepted_overpayment_changes_no_amount(self, db: AsyncEngine) -> None:
        session = await new_session(db)
        await pay(db, session, transfer(session, 10 * USDT), transfer(session, 3 * USDT))
        [case] = await exceptions(db, session.id)
        await clear_outbox(db)

        await request(db, case["id"], "accept")
        await resolve(db)

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Paid", 10 * USDT)
        [event] = await outbox_events(db, session.id)
        assert isinstance(event, SessionResolved)
        assert event.exception_kind is ExceptionKind.OVERPAYMENT


class TestOtherActions:
    async def test_dismiss_and_refund_close_the_case_without_an_event(
        self, db: AsyncEngine
    ) -> None:
        first, second = await expired_session(db), await expired_session(db)
        await pay(db, first, transfer(first, 10 * USDT))
        await pay(db, second, transfer(second, 10 * USDT))
        [one], [two] = await exceptions(db, first.id), await exceptions(db, second.id)
        await clear_outbox(db)

        await request(db, one["id"], "dismiss")
        await request(db, two["id"], "refund_requested")
        assert await resolve(db) == 2

        assert (await exceptions(db, first.id))[0]["status"] == "dismissed"
        assert (await exceptions(db, second.id))[0]["status"] == "refund_requested"
        assert (await session_row(db, first.id))["status"] == "Expired"
        assert await outbox_events(db, first.id) == []
        assert await outbox_events(db, second.id) == []

    async def test_an_action_that_does_not_fit_is_refused_with_the_reason(
        self, db: AsyncEngine
    ) -> None:
        session = await expired_session(db)
        await pay(db, session, transfer(session, 10 * USDT, tag="gone"))
        await pay(
            db, session, transfer(session, 10 * USDT, tag="gone", stage=TransferStage.REVERTED)
        )
        [case] = await exceptions(db, session.id)

        await request(db, case["id"], "accept")
        assert await resolve(db) == 0

        [case] = await exceptions(db, session.id)
        assert (case["status"], case["requested_action"]) == ("open", None)
        assert "Reverted" in case["resolution_error"]
        assert (await session_row(db, session.id))["amount_received"] == 0

    async def test_two_workers_apply_a_request_once(self, db: AsyncEngine) -> None:
        session = await expired_session(db)
        await pay(db, session, transfer(session, 10 * USDT))
        [case] = await exceptions(db, session.id)
        await clear_outbox(db)

        await request(db, case["id"], "accept")
        done = await asyncio.gather(resolve(db), resolve(db), resolve(db))

        assert sum(done) == 1
        assert [e.type for e in await outbox_events(db, session.id)] == [
            "session.resolved",
            "session.updated",
        ]
