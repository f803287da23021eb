"""POST /v1/checkout/sessions/{id}/expire: Pending only, with session.updated in the outbox."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import checkout_sessions, outbox
from pago.common.events import SessionUpdated
from pago.common.topics import CHECKOUT_SESSIONS
from tests.support.api import Merchant, assert_error, crypto_body

URL = "/v1/checkout/sessions"


async def _create(client: httpx.AsyncClient, merchant: Merchant, sub: str | None = None) -> str:
    response = await client.post(URL, json=crypto_body(), headers=merchant.headers(sub=sub))
    session_id: str = response.json()["id"]
    return session_id


class TestExpire:
    async def test_pending_becomes_expired(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        session_id = await _create(client, merchant)
        response = await client.post(f"{URL}/{session_id}/expire", headers=merchant.headers())
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "Expired"
        got = await client.get(f"{URL}/{session_id}", headers=merchant.headers())
        assert got.json() == response.json()
        async with db.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.key, outbox.c.value, outbox.c.headers)
                    .where(outbox.c.topic == CHECKOUT_SESSIONS)
                    .order_by(outbox.c.id)
                )
            ).all()
        assert [r.key for r in rows] == [session_id, session_id]
        event = SessionUpdated.model_validate_json(rows[1].value)
        assert rows[1].headers["event_type"] == "session.updated"
        assert event.previous_status == "Pending"
        assert json.loads(event.session.model_dump_json()) == response.json()

    @pytest.mark.parametrize("status", ["Paid", "Overpaid", "Underpaid", "Expired", "Blocked"])
    async def test_only_pending_can_expire(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, status: str
    ) -> None:
        session_id = await _create(client, merchant)
        async with db.begin() as conn:
            await conn.execute(
                update(checkout_sessions)
                .where(checkout_sessions.c.id == session_id)
                .values(status=status)
            )
        response = await client.post(f"{URL}/{session_id}/expire", headers=merchant.headers())
        error = assert_error(response, 409, "session_not_pending")
        assert status in error["message"]

    async def test_twice_is_a_conflict(self, client: httpx.AsyncClient, merchant: Merchant) -> None:
        session_id = await _create(client, merchant)
        await client.post(f"{URL}/{session_id}/expire", headers=merchant.headers())
        second = await client.post(f"{URL}/{session_id}/expire", headers=merchant.headers())
        assert_error(second, 409, "session_not_pending")

    async def test_other_merchant_or_sub_merchant_is_404(
        self, client: httpx.AsyncClient, merchant: Merchant, other_merchant: Merchant
    ) -> None:
        session_id = await _create(client, merchant, sub="shop-a")
        for headers in (other_merchant.headers(), merchant.headers(sub="shop-b")):
            response = await client.post(f"{URL}/{session_id}/expire", headers=headers)
            assert_error(response, 404, "resource_missing")
        ok = await client.post(f"{URL}/{session_id}/expire", headers=merchant.headers())
        assert ok.status_code == 200
