"""SQL of authentication: resolve a key digest (and a sub-merchant code) in one round trip."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import api_keys, merchants, sub_merchants


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    mode: str
    revoked: bool
    merchant_id: str
    merchant_name: str
    logo_url: str | None
    session_expiry_minutes: int
    duplicate_order_guard: bool
    sub_merchant_id: str | None
    sub_merchant_code: str | None
    sub_merchant_name: str | None
    sub_merchant_active: bool | None


# Built once: SQLAlchemy memoizes a statement's cache key, so the hot path skips rebuilding it.
_FIND_KEY = (
    select(
        api_keys.c.id,
        api_keys.c.mode,
        api_keys.c.revoked_at,
        merchants.c.id.label("merchant_id"),
        merchants.c.name,
        merchants.c.logo_url,
        merchants.c.session_expiry_minutes,
        merchants.c.duplicate_order_guard,
        sub_merchants.c.id.label("sub_id"),
        sub_merchants.c.code.label("sub_code"),
        sub_merchants.c.name.label("sub_name"),
        sub_merchants.c.active.label("sub_active"),
    )
    .select_from(
        api_keys.join(merchants, merchants.c.id == api_keys.c.merchant_id).outerjoin(
            sub_merchants,
            and_(
                sub_merchants.c.merchant_id == api_keys.c.merchant_id,
                sub_merchants.c.code == bindparam("code"),
            ),
        )
    )
    .where(api_keys.c.key_hash == bindparam("key_hash"))
)


async def find_key(
    conn: AsyncConnection, key_hash: bytes, sub_merchant_code: str | None
) -> KeyRecord | None:
    """The key with its merchant, and the sub-merchant of ``sub_merchant_code`` if it has one."""
    params = {"key_hash": key_hash, "code": sub_merchant_code}
    row = (await conn.execute(_FIND_KEY, params)).one_or_none()
    if row is None:
        return None
    return KeyRecord(
        key_id=row.id,
        mode=row.mode,
        revoked=row.revoked_at is not None,
        merchant_id=row.merchant_id,
        merchant_name=row.name,
        logo_url=row.logo_url,
        session_expiry_minutes=row.session_expiry_minutes,
        duplicate_order_guard=row.duplicate_order_guard,
        sub_merchant_id=row.sub_id,
        sub_merchant_code=row.sub_code,
        sub_merchant_name=row.sub_name,
        sub_merchant_active=row.sub_active,
    )


async def touch_key(conn: AsyncConnection, key_id: str, now: datetime) -> None:
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
