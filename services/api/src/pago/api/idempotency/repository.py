"""SQL of the durable idempotency records (``idempotency_records``).

A row is the scope (merchant, mode, sub-merchant or ``''``), the key, the request's
fingerprint and the stored response. It is claimed (inserted without a response) as the first
statement of the request's transaction and completed in that same transaction, so a committed
row always carries its response; a concurrent claim of the same scope and key waits on the
primary key until the first transaction ends, then sees its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import idempotency_records

ir = idempotency_records


@dataclass(frozen=True, slots=True)
class RecordScope:
    merchant_id: str
    mode: str
    sub_merchant_id: str
    """``''`` when the key was used without ``X-Sub-Merchant-Code``."""
    key: str

    def where(self) -> tuple[ColumnElement[bool], ...]:
        return (
            ir.c.merchant_id == self.merchant_id,
            ir.c.mode == self.mode,
            ir.c.sub_merchant_id == self.sub_merchant_id,
            ir.c.key == self.key,
        )

    def values(self) -> dict[str, str]:
        return {
            "merchant_id": self.merchant_id,
            "mode": self.mode,
            "sub_merchant_id": self.sub_merchant_id,
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class StoredRecord:
    fingerprint: str
    status_code: int
    content_type: str
    body: bytes


async def find(conn: AsyncConnection, scope: RecordScope, now: datetime) -> StoredRecord | None:
    """The completed, unexpired record of ``scope`` (a claim is never visible: see module)."""
    query = select(ir.c.fingerprint, ir.c.status_code, ir.c.content_type, ir.c.body).where(
        *scope.where(), ir.c.expires_at > now, ir.c.status_code.is_not(None)
    )
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        return None
    return StoredRecord(row.fingerprint, int(row.status_code), str(row.content_type), row.body)


async def claim(
    conn: AsyncConnection, scope: RecordScope, fingerprint: str, expires_at: datetime, now: datetime
) -> bool:
    """Insert the claim; ``False`` when a live record of ``scope`` exists (committed by another
    transaction, waited for if it was still running). An expired record is taken over."""
    statement = insert(ir).values(
        **scope.values(), fingerprint=fingerprint, created_at=now, expires_at=expires_at
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[ir.c.merchant_id, ir.c.mode, ir.c.sub_merchant_id, ir.c.key],
        set_={
            "fingerprint": statement.excluded.fingerprint,
            "status_code": None,
            "content_type": None,
            "body": None,
            "created_at": statement.excluded.created_at,
            "expires_at": statement.excluded.expires_at,
        },
        where=ir.c.expires_at <= now,
    )
    return (await conn.execute(upsert.returning(ir.c.key))).first() is not None


async def complete(
    conn: AsyncConnection, scope: RecordScope, status_code: int, content_type: str, body: bytes
) -> None:
    await conn.execute(
        update(ir)
        .where(*scope.where())
        .values(status_code=status_code, content_type=content_type, body=body)
    )


async def drop(conn: AsyncConnection, scope: RecordScope) -> None:
    await conn.execute(delete(ir).where(*scope.where()))


async def store(
    conn: AsyncConnection,
    scope: RecordScope,
    fingerprint: str,
    status_code: int,
    content_type: str,
    body: bytes,
    expires_at: datetime,
    now: datetime,
) -> None:
    """Write a completed record outside a claim (a request that used no transaction of its
    own); an existing live record is left as it is."""
    statement = insert(ir).values(
        **scope.values(),
        fingerprint=fingerprint,
        status_code=status_code,
        content_type=content_type,
        body=body,
        created_at=now,
        expires_at=expires_at,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[ir.c.merchant_id, ir.c.mode, ir.c.sub_merchant_id, ir.c.key],
            set_={
                "fingerprint": statement.excluded.fingerprint,
                "status_code": statement.excluded.status_code,
                "content_type": statement.excluded.content_type,
                "body": statement.excluded.body,
                "created_at": statement.excluded.created_at,
                "expires_at": statement.excluded.expires_at,
            },
            where=ir.c.expires_at <= now,
        )
    )


async def purge(conn: AsyncConnection, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` expired records (oldest first); how many went."""
    doomed = (
        select(ir.c.merchant_id, ir.c.mode, ir.c.sub_merchant_id, ir.c.key)
        .where(ir.c.expires_at <= now)
        .order_by(ir.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("doomed")
    )
    statement = (
        delete(ir)
        .where(
            ir.c.merchant_id == doomed.c.merchant_id,
            ir.c.mode == doomed.c.mode,
            ir.c.sub_merchant_id == doomed.c.sub_merchant_id,
            ir.c.key == doomed.c.key,
        )
        .returning(ir.c.key)
    )
    return len((await conn.execute(statement)).all())
