"""Pool addresses cool down before another session may have them (issue 11, item 3).

A late payment for S1, or a customer paying again from an address saved in their wallet, must
reach S1 (a payment exception), never S2: an address goes back into use only 30 days (the
default cool-down) after its last session ended, never while a payment exception on one of its
sessions is open, least recently used first. Time is moved in the database, never slept.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.settings import ApiSettings
from pago.common.db.schema import payment_exceptions
from pago.common.enums import ChainFamily, ExceptionKind, ExceptionStatus, Mode, SessionStatus
from tests.integration.api.addresses.support import (
    DAY,
    URL,
    cool,
    create,
    created,
    ended_session,
    lease_row,
    pay,
    pool_merchant,
    spec_of,
)
from tests.support.api import SettingsFactory, assert_error, running_app, solana_pubkeys
from tests.support.matcher import exceptions, session_row


class TestCooldown:
    async def test_a_late_payment_for_an_ended_session_never_pays_the_next_one(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        merchant = await pool_merchant(db, settings, 1)
        s1 = await ended_session(client, db, merchant)
        lease = await lease_row(db, s1["pay_address"])
        assert lease["released_at"] is not None  # the matcher recorded when S1 ended
        assert lease["leased_until"] < datetime.now(UTC)  # S1's watch window is over too

        # S2, right after S1 ended: S1's address is cooling down, and it is the only one.
        exhausted = await create(client, merchant)
        assert_error(exhausted, 503, "address_pool_exhausted", error_type="api_error")
        assert int(exhausted.headers["retry-after"]) > 0

        async with db.begin() as conn:
            await admin.import_pool(
                conn,
                merchant.id,
                family=ChainFamily.SOLANA,
                mode=Mode.TEST,
                lines=solana_pubkeys(1),
            )
        s2 = await created(client, merchant)
        assert s2["pay_address"] != s1["pay_address"]

        # S1's customer pays late, to the address they were shown (or saved).
        await pay(db, spec_of(s1, merchant))
        [case] = await exceptions(db, s1["id"])
        assert case["kind"] == ExceptionKind.LATE_PAYMENT
        second = await session_row(db, s2["id"])
        assert (second["status"], int(second["amount_received"])) == (SessionStatus.PENDING, 0)

    async def test_an_address_with_an_open_payment_exception_is_never_re_leased(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        merchant = await pool_merchant(db, settings, 1)
        s1 = await ended_session(client, db, merchant)
        await pay(db, spec_of(s1, merchant), 10**6)
        [case] = await exceptions(db, s1["id"])
        assert case["status"] == ExceptionStatus.OPEN

        await cool(db, s1["pay_address"], 365 * DAY)  # a year: far past any cool-down
        assert_error(await create(client, merchant), 503, "address_pool_exhausted")

        async with db.begin() as conn:  # the operator settles the case
            await conn.execute(
                update(payment_exceptions)
                .where(payment_exceptions.c.id == case["id"])
                .values(status=ExceptionStatus.DISMISSED.value, resolved_at=datetime.now(UTC))
            )
        s2 = await created(client, merchant)
        assert s2["pay_address"] == s1["pay_address"]

    async def test_the_least_recently_used_cooled_address_comes_back_first(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        merchant = await pool_merchant(db, settings, 3)
        sessions = [await created(client, merchant) for _ in range(3)]
        for s in sessions:  # ended by the merchant (the api's expire), not by the matcher
            response = await client.post(f"{URL}/{s['id']}/expire", headers=merchant.headers())
            assert response.status_code == 200, response.text
        a, b, c = (s["pay_address"] for s in sessions)
        assert_error(await create(client, merchant), 503, "address_pool_exhausted")
        for address, days in ((a, 40), (b, 50), (c, 29)):
            await cool(db, address, days * DAY)
        # c ended 29 days ago: one day of its cool-down is left.
        assert [(await created(client, merchant))["pay_address"] for _ in range(2)] == [b, a]
        assert_error(await create(client, merchant), 503, "address_pool_exhausted")
        await cool(db, c, 2 * DAY)
        assert (await created(client, merchant))["pay_address"] == c

    async def test_a_short_cool_down_setting_is_honoured(
        self, db: AsyncEngine, make_settings: SettingsFactory
    ) -> None:
        settings = make_settings(address_cooldown_days=1)
        async with running_app(settings) as (_, client):
            merchant = await pool_merchant(db, settings, 1)
            s1 = await created(client, merchant)
            await client.post(f"{URL}/{s1['id']}/expire", headers=merchant.headers())
            await cool(db, s1["pay_address"], timedelta(hours=23))
            assert_error(await create(client, merchant), 503, "address_pool_exhausted")
            await cool(db, s1["pay_address"], timedelta(hours=2))
            assert (await created(client, merchant))["pay_address"] == s1["pay_address"]

    async def test_concurrent_creates_never_lease_one_address_twice(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        merchant = await pool_merchant(db, settings, 4)
        first = [await created(client, merchant) for _ in range(4)]
        for s in first:
            await client.post(f"{URL}/{s['id']}/expire", headers=merchant.headers())
            await cool(db, s["pay_address"], 31 * DAY)
        responses = await asyncio.gather(*(create(client, merchant) for _ in range(7)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] * 4 + [503] * 3, [r.text for r in responses]
        leased = [r.json()["pay_address"] for r in responses if r.status_code == 201]
        assert sorted(leased) == sorted(s["pay_address"] for s in first)


class TestContract:
    async def test_create_documents_the_exhausted_pool(self, client: httpx.AsyncClient) -> None:
        document = (await client.get("/openapi.json")).json()
        create_op = document["paths"]["/v1/checkout/sessions"]["post"]
        unavailable = create_op["responses"]["503"]
        assert "address_pool_exhausted" in unavailable["description"]
        assert "Retry-After" in unavailable["headers"]
