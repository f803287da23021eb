"""SQL of payment exceptions (SQLAlchemy Core over ``pago.common.db.schema``).

Every query is scoped to one merchant and mode (and, for a caller acting as a sub-merchant, to
that sub-merchant's sessions); listing walks ``ix_payment_exceptions_merchant``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, RowMapping, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import checkout_sessions, payment_exceptions
from pago.common.enums import ExceptionStatus

pe = payment_exceptions


@dataclass(frozen=True, slots=True)
class Scope:
    merchant_id: str
    mode: str
    sub_merchant_id: str | None
    """Set: only exceptions of this sub-merchant's sessions."""


@dataclass(frozen=True, slots=True)
class ExceptionFilter:
    scope: Scope
    statuses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    session_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _scoped(scope: Scope) -> list[ColumnElement[bool]]:
    where = [pe.c.merchant_id == scope.merchant_id, pe.c.mode == scope.mode]
    if scope.sub_merchant_id is not None:
        own = select(checkout_sessions.c.id).where(
            checkout_sessions.c.sub_merchant_id == scope.sub_merchant_id,
            checkout_sessions.c.mode == scope.mode,
        )
        where.append(pe.c.session_id.in_(own))
    return where


def _filters(f: ExceptionFilter) -> list[ColumnElement[bool]]:
    where = _scoped(f.scope)
    if f.statuses:
        where.append(pe.c.status.in_(f.statuses))
    if f.kinds:
        where.append(pe.c.kind.in_(f.kinds))
    if f.networks:
        where.append(pe.c.network.in_(f.networks))
    if f.session_id is not None:
        where.append(pe.c.session_id == f.session_id)
    if f.created_after is not None:
        where.append(pe.c.created_at > f.created_after)
    if f.created_before is not None:
        where.append(pe.c.created_at < f.created_before)
    return where


async def count(conn: AsyncConnection, f: ExceptionFilter) -> int:
    query = select(func.count()).select_from(pe).where(*_filters(f))
    return int((await conn.execute(query)).scalar_one())


async def page(
    conn: AsyncConnection, f: ExceptionFilter, *, limit: int, offset: int
) -> Sequence[RowMapping]:
    query = (
        select(pe)
        .where(*_filters(f))
        .order_by(pe.c.created_at.desc(), pe.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list((await conn.execute(query)).mappings())


async def get(
    conn: AsyncConnection, exception_id: str, scope: Scope, *, for_update: bool = False
) -> RowMapping | None:
    query = select(pe).where(pe.c.id == exception_id, *_scoped(scope))
    if for_update:
        query = query.with_for_update(of=pe)
    return (await conn.execute(query)).mappings().first()


async def request_resolution(
    conn: AsyncConnection, exception_id: str, action: str, note: str | None, now: datetime
) -> None:
    """Record the operator's action for the matcher (which clears it once applied)."""
    await conn.execute(
        update(pe)
        .where(pe.c.id == exception_id, pe.c.status == ExceptionStatus.OPEN.value)
        .values(
            requested_action=action,
            requested_at=now,
            resolution_note=note,
            resolution_error=None,
        )
    )
