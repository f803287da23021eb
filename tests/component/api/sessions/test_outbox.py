"""Creating a session writes the session, its lease and both events in one transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import checkout_sessions, deposit_addresses, outbox
from pago.common.events import SessionCreated, WatchAddress
from pago.common.topics import CHAIN_WATCHLIST, CHECKOUT_SESSIONS
from tests.support.api import Merchant, assert_error, crypto_body

URL = "/v1/checkout/sessions"


async def _count(db: AsyncEngine, table: object) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


class TestOutbox:
    async def test_session_created_and_watch_address_are_enqueued(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        response = await client.post(URL, json=crypto_body(), headers=merchant.headers())
        session = response.json()
        async with db.connect() as conn:
            rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
        assert [(r["topic"], r["key"]) for r in rows] == [
            (CHECKOUT_SESSIONS, session["id"]),
            (CHAIN_WATCHLIST, f"TRON:test:{session['pay_address']}"),
        ]
        created = SessionCreated.model_validate_json(rows[0]["value"])
        assert rows[0]["headers"] == {"v": "1", "event_type": "session.created"}
        assert created.event_id.startswith("evt_")
        assert (created.session_id, created.merchant_id, created.mode) == (
            session["id"],
            merchant.id,
            "test",
        )
        # The event carries exactly the API's session object.
        assert json.loads(created.session.model_dump_json()) == session
        watch = WatchAddress.model_validate_json(rows[1]["value"])
        assert (watch.network, watch.mode, watch.address, watch.session_id) == (
            "TRON",
            "test",
            session["pay_address"],
            session["id"],
        )
        expires_at = datetime.fromisoformat(session["expires_at"])
        assert watch.watch_until == expires_at + timedelta(hours=24)
        # The watcher back-fills from the block at the session's creation (issue 11, item 4).
        assert watch.created_at == datetime.fromisoformat(session["created_at"])

    async def test_the_lease_names_the_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        session = (await client.post(URL, json=crypto_body(), headers=merchant.headers())).json()
        async with db.connect() as conn:
            lease = (
                (
                    await conn.execute(
                        select(deposit_addresses).where(
                            deposit_addresses.c.address == session["pay_address"]
                        )
                    )
                )
                .mappings()
                .one()
            )
        assert lease["session_id"] == session["id"]
        assert lease["derivation_index"] == 0
        assert lease["leased_until"] == datetime.fromisoformat(session["expires_at"]) + timedelta(
            hours=24
        )


@pytest.fixture
async def failing_outbox(db: AsyncEngine) -> AsyncIterator[None]:
    """A database that refuses outbox rows: the last write of a create fails."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION pago_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'outbox refused by the test'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER pago_test_refuse BEFORE INSERT ON outbox "
                "FOR EACH STATEMENT EXECUTE FUNCTION pago_test_refuse()"
            )
        )
    try:
        yield
    finally:
        async with db.begin() as conn:
            await conn.execute(text("DROP TRIGGER pago_test_refuse ON outbox"))
            await conn.execute(text("DROP FUNCTION pago_test_refuse()"))


class TestAtomicity:
    async def test_a_failed_outbox_write_rolls_back_session_and_lease(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, failing_outbox: None
    ) -> None:
        leases_before = await _count(db, deposit_addresses)
        response = await client.post(URL, json=crypto_body(), headers=merchant.headers())
        error = assert_error(response, 500, "api_error", error_type="api_error")
        assert "outbox" not in error["message"]
        assert "refused" not in response.text
        assert await _count(db, checkout_sessions) == 0
        assert await _count(db, outbox) == 0
        assert await _count(db, deposit_addresses) == leases_before
