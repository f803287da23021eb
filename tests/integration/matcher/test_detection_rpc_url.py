"""The matcher's events carry the session's detection_rpc_url (webhooks show the API's object)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import checkout_sessions
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.support.matcher import (
    BASE_URL,
    USDT,
    new_session,
    outbox_events,
    stored_snapshot,
    transfer,
)

RPC = "http://127.0.0.1:8545/"


async def test_a_payment_event_carries_the_sessions_detection_rpc_url(db: AsyncEngine) -> None:
    session = await new_session(db)
    async with db.begin() as conn:
        await conn.execute(
            update(checkout_sessions)
            .where(checkout_sessions.c.id == session.id)
            .values(detection_rpc_url=RPC)
        )
    payment = transfer(session, 10 * USDT)
    async with db.begin() as conn:
        await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn, [payment], {sender(payment): AmlVerdict.clear()}, datetime.now(UTC)
        )
    events = await outbox_events(db, session.id)
    assert events
    assert {e.session.detection_rpc_url for e in events} == {RPC}
    # The same object the api returns for the stored session.
    assert events[-1].session == await stored_snapshot(db, session.id)


async def test_a_session_without_one_says_null(db: AsyncEngine) -> None:
    session = await new_session(db)
    payment = transfer(session, 10 * USDT)
    async with db.begin() as conn:
        await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn, [payment], {sender(payment): AmlVerdict.clear()}, datetime.now(UTC)
        )
    [event, *_] = await outbox_events(db, session.id)
    assert event.session.detection_rpc_url is None
    assert b'"detection_rpc_url":null' in event.to_bytes()
