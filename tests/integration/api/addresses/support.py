"""Helpers of the address-pool tests: create through the api, end and pay through the
matcher's own code, and move time in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.common.db.schema import deposit_addresses
from pago.common.enums import Mode, Network, SessionStatus, Token
from pago.matcher import jobs
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.support.api import Merchant, crypto_body, seed_merchant
from tests.support.matcher import BASE_URL, SessionSpec, session_row, transfer

URL = "/v1/checkout/sessions"
DAY = timedelta(days=1)


async def create(client: httpx.AsyncClient, merchant: Merchant) -> httpx.Response:
    body = crypto_body(network="SOLANA", currency="USDC", pricing_currency="USDC")
    return await client.post(URL, json=body, headers=merchant.headers())


async def created(client: httpx.AsyncClient, merchant: Merchant) -> dict[str, Any]:
    response = await create(client, merchant)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def pool_merchant(db: AsyncEngine, settings: ApiSettings, size: int) -> Merchant:
    return await seed_merchant(db, settings, solana_pool=size, sub_merchants=())


async def age(db: AsyncEngine, session_id: str, by: timedelta) -> None:
    """Move a session and its lease ``by`` into the past (it was created that long ago)."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                """
                UPDATE checkout_sessions SET created_at = created_at - CAST(:by AS interval),
                    expires_at = expires_at - CAST(:by AS interval) WHERE id = :id
                """
            ),
            {"id": session_id, "by": by},
        )
        await conn.execute(
            update(deposit_addresses)
            .where(deposit_addresses.c.session_id == session_id)
            .values(leased_until=deposit_addresses.c.leased_until - by)
        )


async def cool(db: AsyncEngine, address: str, by: timedelta) -> None:
    """Move the end of ``address``'s last session (and its lease) ``by`` into the past."""
    async with db.begin() as conn:
        await conn.execute(
            update(deposit_addresses)
            .where(deposit_addresses.c.address == address)
            .values(
                released_at=deposit_addresses.c.released_at - by,
                leased_until=deposit_addresses.c.leased_until - by,
            )
        )


async def expire_by_matcher(db: AsyncEngine) -> int:
    return await jobs.expire_due(db, now=datetime.now(UTC), limit=100, checkout_base_url=BASE_URL)


async def lease_row(db: AsyncEngine, address: str) -> dict[str, Any]:
    async with db.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(deposit_addresses).where(deposit_addresses.c.address == address)
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


def spec_of(session: dict[str, Any], merchant: Merchant) -> SessionSpec:
    return SessionSpec(
        merchant_id=merchant.id,
        network=Network(session["network"]),
        mode=Mode.TEST,
        currency=Token(session["currency"]),
        amount_expected=0,
        pay_address=session["pay_address"],
        id=session["id"],
    )


async def pay(db: AsyncEngine, session: SessionSpec, amount: int | None = None) -> None:
    """A confirmed transfer to the session's address (base units; the full amount by default),
    through the matcher's own code."""
    row = await session_row(db, session.id)
    session.decimals = int(row["decimals"])
    t = transfer(session, int(row["amount_expected"]) if amount is None else amount)
    async with db.begin() as conn:
        outcome = await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn, [t], {sender(t): AmlVerdict.clear()}, datetime.now(UTC)
        )
    outcome.committed()


async def ended_session(
    client: httpx.AsyncClient, db: AsyncEngine, merchant: Merchant
) -> dict[str, Any]:
    """A session created two days ago that the matcher's expiry job has just expired."""
    session = await created(client, merchant)
    await age(db, session["id"], 2 * DAY)
    assert await expire_by_matcher(db) >= 1
    assert (await session_row(db, session["id"]))["status"] == SessionStatus.EXPIRED
    return session
