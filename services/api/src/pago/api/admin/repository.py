"""SQL of the admin CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import (
    api_keys,
    card_routing_rules,
    deposit_addresses,
    deposit_xpubs,
    merchants,
    oauth_clients,
    sub_merchants,
)


@dataclass(frozen=True, slots=True)
class MerchantRow:
    id: str
    name: str
    logo_url: str | None
    fee_rate: Decimal | None
    fee_floor: Decimal | None
    session_expiry_minutes: int
    created_at: datetime
    duplicate_order_guard: bool
    """A repeated ``client_reference_id`` answers the existing session (IronixPay's guard)."""


async def insert_merchant(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(merchants).values(**values))


async def update_merchant(conn: AsyncConnection, merchant_id: str, values: dict[str, Any]) -> bool:
    statement = (
        update(merchants)
        .where(merchants.c.id == merchant_id)
        .values(**values)
        .returning(merchants.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def get_merchant(conn: AsyncConnection, merchant_id: str) -> MerchantRow | None:
    rows = await _merchants(conn, merchants.c.id == merchant_id)
    return rows[0] if rows else None


async def list_merchants(conn: AsyncConnection) -> list[MerchantRow]:
    return await _merchants(conn, None)


async def _merchants(conn: AsyncConnection, where: Any) -> list[MerchantRow]:
    query = select(
        merchants.c.id,
        merchants.c.name,
        merchants.c.logo_url,
        merchants.c.fee_rate,
        merchants.c.fee_floor,
        merchants.c.session_expiry_minutes,
        merchants.c.created_at,
        merchants.c.duplicate_order_guard,
    ).order_by(merchants.c.created_at, merchants.c.id)
    if where is not None:
        query = query.where(where)
    return [MerchantRow(*row) for row in await conn.execute(query)]


async def insert_sub_merchant(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(sub_merchants).values(**values))


async def sub_merchant_id(conn: AsyncConnection, merchant_id: str, code: str) -> str | None:
    query = select(sub_merchants.c.id).where(
        sub_merchants.c.merchant_id == merchant_id, sub_merchants.c.code == code
    )
    return (await conn.execute(query)).scalar_one_or_none()


async def list_sub_merchants(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    query = (
        select(
            sub_merchants.c.id,
            sub_merchants.c.code,
            sub_merchants.c.name,
            sub_merchants.c.active,
            sub_merchants.c.created_at,
        )
        .where(sub_merchants.c.merchant_id == merchant_id)
        .order_by(sub_merchants.c.code)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def set_sub_merchant_active(
    conn: AsyncConnection, merchant_id: str, code: str, active: bool
) -> bool:
    statement = (
        update(sub_merchants)
        .where(sub_merchants.c.merchant_id == merchant_id, sub_merchants.c.code == code)
        .values(active=active)
        .returning(sub_merchants.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def insert_api_key(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(api_keys).values(**values))


async def list_api_keys(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    query = (
        select(
            api_keys.c.id,
            api_keys.c.mode,
            api_keys.c.key_hint,
            api_keys.c.label,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        )
        .where(api_keys.c.merchant_id == merchant_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def revoke_api_key(conn: AsyncConnection, key_id: str, now: datetime) -> str | None:
    """Revoke; returns the revocation time (the earlier one if it already was), None if unknown."""
    statement = (
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revoked_at=func.coalesce(api_keys.c.revoked_at, now))
        .returning(api_keys.c.revoked_at)
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else row.revoked_at.isoformat()


async def active_xpub(
    conn: AsyncConnection, merchant_id: str, family: str, mode: str
) -> tuple[str, str] | None:
    """(id, xpub) of the active registration, if any."""
    query = select(deposit_xpubs.c.id, deposit_xpubs.c.xpub).where(
        deposit_xpubs.c.merchant_id == merchant_id,
        deposit_xpubs.c.family == family,
        deposit_xpubs.c.mode == mode,
        deposit_xpubs.c.retired_at.is_(None),
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else (row.id, row.xpub)


async def xpub_owner(conn: AsyncConnection, xpub: str) -> str | None:
    """The merchant that registered ``xpub`` before (active or retired), if any."""
    query = select(deposit_xpubs.c.merchant_id).where(deposit_xpubs.c.xpub == xpub).limit(1)
    return (await conn.execute(query)).scalar_one_or_none()


async def retire_xpub(conn: AsyncConnection, xpub_id: str, now: datetime) -> None:
    await conn.execute(
        update(deposit_xpubs).where(deposit_xpubs.c.id == xpub_id).values(retired_at=now)
    )


async def create_index_sequence(conn: AsyncConnection, name: str, start: int) -> None:
    """A sequence of BIP32 child indexes: 0 .. 2^31 - 1, never cycling (``name`` is ours)."""
    await conn.execute(
        text(
            f'CREATE SEQUENCE "{name}" AS bigint MINVALUE 0 MAXVALUE 2147483647 '
            f"START WITH {int(start)} NO CYCLE"
        )
    )


async def max_derived_index(conn: AsyncConnection, merchant_id: str, xpub: str) -> int | None:
    """The highest index already used under any registration of the same xpub."""
    ids = select(deposit_xpubs.c.id).where(
        deposit_xpubs.c.merchant_id == merchant_id, deposit_xpubs.c.xpub == xpub
    )
    sources = [f"xpub:{row.id}" for row in await conn.execute(ids)]
    if not sources:
        return None
    query = select(func.max(deposit_addresses.c.derivation_index)).where(
        deposit_addresses.c.source.in_(sources)
    )
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else int(value)


async def insert_xpub(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(deposit_xpubs).values(**values))


async def list_xpubs(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    query = (
        select(
            deposit_xpubs.c.id,
            deposit_xpubs.c.family,
            deposit_xpubs.c.mode,
            deposit_xpubs.c.xpub,
            deposit_xpubs.c.index_sequence,
            deposit_xpubs.c.created_at,
            deposit_xpubs.c.retired_at,
        )
        .where(deposit_xpubs.c.merchant_id == merchant_id)
        .order_by(deposit_xpubs.c.created_at)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def pool_status(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    da = deposit_addresses
    query = (
        select(
            da.c.family,
            da.c.mode,
            func.count().label("total"),
            func.count().filter(da.c.session_id.is_(None)).label("never_used"),
        )
        .where(da.c.merchant_id == merchant_id, da.c.source == "pool")
        .group_by(da.c.family, da.c.mode)
        .order_by(da.c.family, da.c.mode)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def known_addresses(
    conn: AsyncConnection, family: str, mode: str, addresses: Sequence[str]
) -> set[str]:
    query = select(deposit_addresses.c.address).where(
        deposit_addresses.c.family == family,
        deposit_addresses.c.mode == mode,
        deposit_addresses.c.address.in_(addresses),
    )
    return {row.address for row in await conn.execute(query)}


# --- OAuth clients (the card API) -----------------------------------------------------------


async def insert_oauth_client(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(oauth_clients).values(**values))


async def external_client_exists(conn: AsyncConnection, issuer: str, subject: str) -> bool:
    query = select(oauth_clients.c.id).where(
        oauth_clients.c.external_issuer == issuer, oauth_clients.c.external_subject == subject
    )
    return (await conn.execute(query)).first() is not None


async def list_oauth_clients(
    conn: AsyncConnection, merchant_id: str | None
) -> list[dict[str, Any]]:
    query = select(
        oauth_clients.c.id,
        oauth_clients.c.merchant_id,
        oauth_clients.c.mode,
        oauth_clients.c.scopes,
        oauth_clients.c.secret_hint,
        oauth_clients.c.external_issuer,
        oauth_clients.c.external_subject,
        oauth_clients.c.label,
        oauth_clients.c.created_at,
        oauth_clients.c.revoked_at,
    ).order_by(oauth_clients.c.created_at, oauth_clients.c.id)
    if merchant_id is not None:
        query = query.where(oauth_clients.c.merchant_id == merchant_id)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def revoke_oauth_client(conn: AsyncConnection, client_id: str, now: datetime) -> str | None:
    """Revoke; returns the revocation time (the earlier one if it already was), None if unknown."""
    statement = (
        update(oauth_clients)
        .where(oauth_clients.c.id == client_id)
        .values(revoked_at=func.coalesce(oauth_clients.c.revoked_at, now))
        .returning(oauth_clients.c.revoked_at)
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else row.revoked_at.isoformat()


# --- card routing rules -----------------------------------------------------------------------

rr = card_routing_rules


async def upsert_card_rules(
    conn: AsyncConnection, merchant_id: str, mode: str, values: dict[str, Any], now: datetime
) -> None:
    """Replace the rules of ``merchant_id`` in ``mode`` (all of them: pin, exclude, split)."""
    row = {"merchant_id": merchant_id, "mode": mode, **values, "updated_at": now}
    statement = pg_insert(rr).values(**row)
    replaced = {
        name: statement.excluded[name] for name in ("pin", "exclude", "split", "updated_at")
    }
    await conn.execute(
        statement.on_conflict_do_update(index_elements=[rr.c.merchant_id, rr.c.mode], set_=replaced)
    )


async def card_rules(
    conn: AsyncConnection, merchant_id: str, mode: str | None
) -> list[dict[str, Any]]:
    query = select(
        rr.c.merchant_id, rr.c.mode, rr.c.pin, rr.c.exclude, rr.c.split, rr.c.updated_at
    ).where(rr.c.merchant_id == merchant_id)
    if mode is not None:
        query = query.where(rr.c.mode == mode)
    rows = await conn.execute(query.order_by(rr.c.mode))
    return [dict(row._mapping) for row in rows]


async def delete_card_rules(conn: AsyncConnection, merchant_id: str, mode: str) -> bool:
    result = await conn.execute(
        delete(rr).where(rr.c.merchant_id == merchant_id, rr.c.mode == mode)
    )
    return bool(result.rowcount)
