"""IronixPay's duplicate-order guard: a repeated client_reference_id answers its session."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.common.db.schema import checkout_sessions
from pago.common.enums import Mode
from tests.support.api import Merchant, assert_error, crypto_body

URL = "/v1/checkout/sessions"
EXISTING = "pago-existing-session"


async def create(
    client: httpx.AsyncClient, merchant: Merchant, body: dict[str, Any], **headers: Any
) -> httpx.Response:
    return await client.post(URL, json=body, headers=merchant.headers(**headers))


async def count_sessions(db: AsyncEngine, reference: str | None = None) -> int:
    query = select(func.count()).select_from(checkout_sessions)
    if reference is not None:
        query = query.where(checkout_sessions.c.client_reference_id == reference)
    async with db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def set_status(db: AsyncEngine, session_id: str, status: str) -> None:
    async with db.begin() as conn:
        await conn.execute(
            update(checkout_sessions)
            .where(checkout_sessions.c.id == session_id)
            .values(status=status)
        )


async def set_guard(db: AsyncEngine, merchant: Merchant, on: bool) -> None:
    async with db.begin() as conn:
        await admin.update_merchant(conn, merchant.id, duplicate_order_guard=on)


class TestRepeatedReference:
    async def test_a_repeat_answers_the_existing_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        first = await create(client, merchant, crypto_body(client_reference_id="ord-1"))
        assert first.status_code == 201
        assert EXISTING not in first.headers
        # Another amount, same order: still the order's session (the guard is per reference).
        again = await create(
            client, merchant, crypto_body(client_reference_id="ord-1", pricing_amount="99")
        )
        assert again.status_code == 201, again.text
        assert again.headers[EXISTING] == "true"
        assert "idempotency-replayed" not in again.headers
        assert again.json() == first.json()
        assert await count_sessions(db, "ord-1") == 1

    @pytest.mark.parametrize("status", ["Underpaid", "Paid", "Overpaid", "Blocked"])
    async def test_a_session_in_any_other_state_is_answered_too(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, status: str
    ) -> None:
        first = (await create(client, merchant, crypto_body(client_reference_id="ord-2"))).json()
        await set_status(db, first["id"], status)
        again = await create(client, merchant, crypto_body(client_reference_id="ord-2"))
        assert again.status_code == 201
        assert (again.json()["id"], again.json()["status"]) == (first["id"], status)

    async def test_an_expired_session_is_410(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        first = (await create(client, merchant, crypto_body(client_reference_id="ord-3"))).json()
        expired = await client.post(f"{URL}/{first['id']}/expire", headers=merchant.headers())
        assert expired.status_code == 200
        again = await create(client, merchant, crypto_body(client_reference_id="ord-3"))
        error = assert_error(again, 410, "session_expired", param="client_reference_id")
        assert first["id"] in error["message"]
        assert await count_sessions(db, "ord-3") == 1

    async def test_other_network_currency_mode_or_owner_is_another_order(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        ref = "ord-4"
        bodies_and_headers: list[tuple[dict[str, Any], dict[str, Any]]] = [
            (crypto_body(client_reference_id=ref), {}),
            (crypto_body(client_reference_id=ref, network="ETHEREUM"), {}),
            (
                crypto_body(
                    client_reference_id=ref,
                    network="ETHEREUM",
                    currency="USDC",
                    pricing_currency="USDC",
                ),
                {},
            ),
            (crypto_body(client_reference_id=ref), {"mode": Mode.LIVE}),
            (crypto_body(client_reference_id=ref), {"sub": "shop-a"}),
            (crypto_body(client_reference_id=ref), {"sub": "shop-b"}),
        ]
        responses = [await create(client, merchant, b, **h) for b, h in bodies_and_headers]
        assert [r.status_code for r in responses] == [201] * 6
        assert not any(EXISTING in r.headers for r in responses)
        assert await count_sessions(db, ref) == 6
        again = await create(client, merchant, crypto_body(client_reference_id=ref), sub="shop-a")
        assert again.headers[EXISTING] == "true"
        assert again.json()["id"] == responses[4].json()["id"]

    async def test_without_a_reference_nothing_is_guarded(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        for _ in range(2):
            response = await create(client, merchant, crypto_body(client_reference_id=None))
            assert response.status_code == 201
            assert EXISTING not in response.headers
        assert await count_sessions(db) == 2


class TestSetting:
    async def test_off_creates_a_session_per_request(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        await set_guard(db, merchant, on=False)
        first = await create(client, merchant, crypto_body(client_reference_id="ord-5"))
        await client.post(f"{URL}/{first.json()['id']}/expire", headers=merchant.headers())
        for _ in range(2):
            response = await create(client, merchant, crypto_body(client_reference_id="ord-5"))
            assert response.status_code == 201
            assert EXISTING not in response.headers
        assert await count_sessions(db, "ord-5") == 3
        # Back on: the newest of the earlier sessions answers.
        await set_guard(db, merchant, on=True)
        again = await create(client, merchant, crypto_body(client_reference_id="ord-5"))
        assert again.headers[EXISTING] == "true"
        assert again.json()["id"] == response.json()["id"]

    async def test_new_merchants_have_it_on(self, db: AsyncEngine, merchant: Merchant) -> None:
        async with db.connect() as conn:
            row = await admin.list_merchants(conn)
        assert [m.duplicate_order_guard for m in row] == [True]


class TestWithIdempotencyKey:
    async def test_the_key_is_checked_first(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        body = crypto_body(client_reference_id="ord-6")
        first = await create(client, merchant, body, idempotency_key="k-6")
        # Same key, other body: the key's conflict, not the order's session.
        other = crypto_body(client_reference_id="ord-6", pricing_amount="12")
        conflict = await create(client, merchant, other, idempotency_key="k-6")
        assert_error(conflict, 409, "idempotency_conflict")
        # A new key for the same order: the guard answers, and the key stores that answer.
        again = await create(client, merchant, body, idempotency_key="k-7")
        assert again.headers[EXISTING] == "true"
        replay = await create(client, merchant, body, idempotency_key="k-7")
        assert replay.headers["idempotency-replayed"] == "true"
        assert replay.json()["id"] == again.json()["id"] == first.json()["id"]


class TestConcurrency:
    async def test_concurrent_creates_of_one_reference_open_one_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        body = crypto_body(client_reference_id="ord-7")
        responses = await asyncio.gather(*(create(client, merchant, body) for _ in range(8)))
        assert [r.status_code for r in responses] == [201] * 8
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(EXISTING in r.headers for r in responses) == 7
        assert await count_sessions(db, "ord-7") == 1

    async def test_a_second_create_waits_for_the_first_to_commit(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        # Both requests are inside their transactions at once (the table is held), so neither
        # can see the other's session: only the guard's lock keeps them from both inserting.
        body = crypto_body(client_reference_id="ord-8")
        async with db.connect() as blocker:
            await blocker.execute(text("LOCK TABLE checkout_sessions IN ACCESS EXCLUSIVE MODE"))
            first = asyncio.create_task(create(client, merchant, body))
            second = asyncio.create_task(create(client, merchant, body))
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                waiting = await blocker.execute(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                )
                if int(waiting.scalar_one()) >= 2:
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            await blocker.rollback()
        a, b = await first, await second
        assert (a.status_code, b.status_code) == (201, 201)
        assert a.json()["id"] == b.json()["id"]
        assert await count_sessions(db, "ord-8") == 1
