"""SQL of webhook endpoints and their deliveries (SQLAlchemy Core over the shared schema).

An endpoint belongs to one merchant in one mode; every query is scoped by both, so a key of
the other mode sees a 404. Deletion is soft (``deleted_at``): deliveries keep their foreign key
and the notifier stops at once. Pending deliveries of a disabled endpoint are paused by clearing
``next_attempt_at`` (out of the due index) and resumed by setting it to ``now()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import RowMapping, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import webhook_deliveries, webhook_endpoints
from pago.common.enums import DeliveryStatus, Mode

e = webhook_endpoints
d = webhook_deliveries

_ENDPOINT_COLUMNS = (
    e.c.id,
    e.c.merchant_id,
    e.c.mode,
    e.c.url,
    e.c.enabled_events,
    e.c.description,
    e.c.previous_secret_expires_at,
    e.c.disabled_at,
    e.c.disabled_reason,
    e.c.created_at,
)
_DELIVERY_COLUMNS = (
    d.c.id,
    d.c.endpoint_id,
    d.c.event_id,
    d.c.event_type,
    d.c.status,
    d.c.attempts,
    d.c.next_attempt_at,
    d.c.last_attempt_at,
    d.c.last_status_code,
    d.c.last_error,
    d.c.created_at,
    d.c.delivered_at,
)


def _owned(merchant_id: str, mode: Mode) -> Any:
    return and_(e.c.merchant_id == merchant_id, e.c.mode == mode.value, e.c.deleted_at.is_(None))


async def count_endpoints(conn: AsyncConnection, merchant_id: str, mode: Mode) -> int:
    query = select(func.count()).select_from(e).where(_owned(merchant_id, mode))
    return int((await conn.execute(query)).scalar_one())


async def insert_endpoint(conn: AsyncConnection, values: dict[str, Any]) -> RowMapping:
    result = await conn.execute(insert(e).values(**values).returning(*_ENDPOINT_COLUMNS))
    return result.mappings().one()


async def list_endpoints(
    conn: AsyncConnection, merchant_id: str, mode: Mode, *, offset: int, limit: int
) -> list[RowMapping]:
    query = (
        select(*_ENDPOINT_COLUMNS)
        .where(_owned(merchant_id, mode))
        .order_by(e.c.created_at.desc(), e.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await conn.execute(query)).mappings())


async def find_endpoint(
    conn: AsyncConnection, merchant_id: str, mode: Mode, endpoint_id: str, *, for_update: bool
) -> RowMapping | None:
    query = select(*_ENDPOINT_COLUMNS).where(_owned(merchant_id, mode), e.c.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).mappings().one_or_none()


async def update_endpoint(
    conn: AsyncConnection, endpoint_id: str, values: dict[str, Any]
) -> RowMapping:
    result = await conn.execute(
        update(e).where(e.c.id == endpoint_id).values(**values).returning(*_ENDPOINT_COLUMNS)
    )
    return result.mappings().one()


async def rotate_secret(
    conn: AsyncConnection, endpoint_id: str, new_secret: str, overlap: timedelta
) -> RowMapping:
    """The current secret becomes the previous one, signing beside the new one for
    ``overlap``; a secret older than that (an earlier rotation's) is dropped."""
    result = await conn.execute(
        update(e)
        .where(e.c.id == endpoint_id)
        .values(
            previous_secret=e.c.secret,
            previous_secret_expires_at=func.now() + overlap,
            secret=new_secret,
        )
        .returning(*_ENDPOINT_COLUMNS)
    )
    return result.mappings().one()


async def pause_deliveries(conn: AsyncConnection, endpoint_id: str) -> None:
    await conn.execute(
        update(d)
        .where(d.c.endpoint_id == endpoint_id, d.c.status == DeliveryStatus.PENDING.value)
        .values(next_attempt_at=None)
    )


async def resume_deliveries(conn: AsyncConnection, endpoint_id: str) -> None:
    await conn.execute(
        update(d)
        .where(
            d.c.endpoint_id == endpoint_id,
            d.c.status == DeliveryStatus.PENDING.value,
            d.c.next_attempt_at.is_(None),
        )
        .values(next_attempt_at=func.now())
    )


async def fail_pending(conn: AsyncConnection, endpoint_id: str, reason: str) -> None:
    """Close the pending deliveries of a deleted endpoint."""
    await conn.execute(
        update(d)
        .where(d.c.endpoint_id == endpoint_id, d.c.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.FAILED.value, next_attempt_at=None, last_error=reason)
    )


async def insert_delivery(conn: AsyncConnection, values: dict[str, Any]) -> RowMapping:
    """A delivery due now (a ping)."""
    result = await conn.execute(
        insert(d)
        .values(
            **values,
            status=DeliveryStatus.PENDING.value,
            next_attempt_at=func.now(),
        )
        .returning(*_DELIVERY_COLUMNS)
    )
    return result.mappings().one()


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    statuses: Sequence[DeliveryStatus] = ()
    event_types: Sequence[str] = ()
    event_id: str | None = None


def _deliveries_of(endpoint_id: str, where: DeliveryFilter) -> list[Any]:
    clauses: list[Any] = [d.c.endpoint_id == endpoint_id]
    if where.statuses:
        clauses.append(d.c.status.in_([s.value for s in where.statuses]))
    if where.event_types:
        clauses.append(d.c.event_type.in_(list(where.event_types)))
    if where.event_id is not None:
        clauses.append(d.c.event_id == where.event_id)
    return clauses


async def list_deliveries(
    conn: AsyncConnection, endpoint_id: str, where: DeliveryFilter, *, offset: int, limit: int
) -> tuple[list[RowMapping], int]:
    """A page of the delivery log, newest first, and the total matching."""
    clauses = _deliveries_of(endpoint_id, where)
    page = (
        select(*_DELIVERY_COLUMNS)
        .where(*clauses)
        .order_by(d.c.created_at.desc(), d.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    total = select(func.count()).select_from(d).where(*clauses)
    rows = list((await conn.execute(page)).mappings())
    return rows, int((await conn.execute(total)).scalar_one())


async def find_delivery(
    conn: AsyncConnection, endpoint_id: str, delivery_id: str
) -> tuple[RowMapping, bytes] | None:
    query = select(*_DELIVERY_COLUMNS, d.c.payload).where(
        d.c.endpoint_id == endpoint_id, d.c.id == delivery_id
    )
    row = (await conn.execute(query)).mappings().one_or_none()
    return (row, bytes(row["payload"])) if row is not None else None


async def redeliver(conn: AsyncConnection, endpoint_id: str, delivery_id: str) -> RowMapping | None:
    """Due now on a fresh schedule. Resetting ``attempts`` also voids the outcome of an attempt
    still in flight (the notifier writes an outcome only while ``attempts`` is unchanged)."""
    result = await conn.execute(
        update(d)
        .where(d.c.endpoint_id == endpoint_id, d.c.id == delivery_id)
        .values(
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=func.now(),
            delivered_at=None,
        )
        .returning(*_DELIVERY_COLUMNS)
    )
    return result.mappings().one_or_none()
