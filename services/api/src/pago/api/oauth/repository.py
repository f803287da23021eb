"""SQL of the card API's OAuth: clients by secret digest or external identity, signing keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import oauth_clients, oauth_signing_keys

_ROTATION_LOCK = 0x0A07_5167
"""``pg_advisory_xact_lock`` key serialising signing-key rotation across api replicas."""


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    merchant_id: str
    mode: str
    scopes: tuple[str, ...]
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyRow:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_key: bytes
    not_before: datetime
    retire_at: datetime | None


_CLIENT_COLUMNS = (
    oauth_clients.c.id,
    oauth_clients.c.merchant_id,
    oauth_clients.c.mode,
    oauth_clients.c.scopes,
    oauth_clients.c.revoked_at,
)


def _client(row: Any) -> ClientRecord:
    return ClientRecord(
        client_id=row.id,
        merchant_id=row.merchant_id,
        mode=row.mode,
        scopes=tuple(row.scopes),
        revoked=row.revoked_at is not None,
    )


async def client_by_secret(conn: AsyncConnection, digest: bytes) -> ClientRecord | None:
    query = select(*_CLIENT_COLUMNS).where(oauth_clients.c.secret_hash == digest)
    row = (await conn.execute(query)).first()
    return None if row is None else _client(row)


async def client_by_identity(
    conn: AsyncConnection, issuer: str, subject: str
) -> ClientRecord | None:
    query = select(*_CLIENT_COLUMNS).where(
        oauth_clients.c.external_issuer == issuer, oauth_clients.c.external_subject == subject
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _client(row)


async def published_keys(conn: AsyncConnection, now: datetime) -> list[KeyRow]:
    """Keys not yet retired (pending ones included), oldest start first."""
    query = (
        select(oauth_signing_keys)
        .where(or_(oauth_signing_keys.c.retire_at.is_(None), oauth_signing_keys.c.retire_at > now))
        .order_by(oauth_signing_keys.c.not_before)
    )
    return [
        KeyRow(
            kid=row.kid,
            algorithm=row.algorithm,
            public_jwk=dict(row.public_jwk),
            private_key=bytes(row.private_key),
            not_before=row.not_before,
            retire_at=row.retire_at,
        )
        for row in await conn.execute(query)
    ]


async def lock_rotation(conn: AsyncConnection) -> None:
    """Held until the transaction ends: one replica rotates, the others see its key."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ROTATION_LOCK})


async def newest_start(conn: AsyncConnection) -> datetime | None:
    query = select(func.max(oauth_signing_keys.c.not_before))
    result: datetime | None = (await conn.execute(query)).scalar_one()
    return result


async def retire_before(conn: AsyncConnection, start: datetime, retire_at: datetime) -> None:
    """Keys that started before ``start`` and have no retirement yet retire at ``retire_at``."""
    await conn.execute(
        update(oauth_signing_keys)
        .where(
            oauth_signing_keys.c.not_before < start,
            oauth_signing_keys.c.retire_at.is_(None),
        )
        .values(retire_at=retire_at)
    )


async def insert_key(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(oauth_signing_keys).values(**values))
