"""SQL of deposit addresses: xpub index sequences, leases, pools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, cast, exists, func, select, update
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import checkout_sessions, deposit_addresses, deposit_xpubs

POOL = "pool"
LIVE_STATUSES = ("Pending", "Underpaid")


@dataclass(frozen=True, slots=True)
class XpubIndex:
    xpub_id: str
    xpub: str
    index: int


# Built once (memoized cache keys): these run on every session create.
_NEXT_INDEX = select(
    deposit_xpubs.c.id,
    deposit_xpubs.c.xpub,
    func.nextval(cast(deposit_xpubs.c.index_sequence, REGCLASS)).label("idx"),
).where(
    deposit_xpubs.c.merchant_id == bindparam("merchant_id"),
    deposit_xpubs.c.family == bindparam("family"),
    deposit_xpubs.c.mode == bindparam("mode"),
    deposit_xpubs.c.retired_at.is_(None),
)
_INSERT_DERIVED = (
    pg_insert(deposit_addresses)
    .on_conflict_do_nothing(constraint="uq_deposit_addresses_address")
    .returning(deposit_addresses.c.id)
)


async def next_xpub_index(
    conn: AsyncConnection, merchant_id: str, family: str, mode: str
) -> XpubIndex | None:
    """The active xpub of (merchant, family, mode) with the next index from its sequence.

    ``nextval`` is not transactional: a rolled-back session leaves a gap, never a repeat.
    """
    params = {"merchant_id": merchant_id, "family": family, "mode": mode}
    row = (await conn.execute(_NEXT_INDEX, params)).one_or_none()
    return None if row is None else XpubIndex(row.id, row.xpub, int(row.idx))


async def insert_derived(
    conn: AsyncConnection,
    *,
    merchant_id: str,
    family: str,
    mode: str,
    address: str,
    xpub_id: str,
    index: int,
    session_id: str,
    leased_until: datetime,
) -> bool:
    """Record a freshly derived address as leased; False if it already exists (never reused)."""
    values = {
        "merchant_id": merchant_id,
        "family": family,
        "mode": mode,
        "address": address,
        "source": f"xpub:{xpub_id}",
        "derivation_index": index,
        "session_id": session_id,
        "leased_until": leased_until,
    }
    return (await conn.execute(_INSERT_DERIVED, values)).first() is not None


async def lease_free(
    conn: AsyncConnection,
    *,
    merchant_id: str,
    family: str,
    mode: str,
    session_id: str,
    leased_until: datetime,
) -> str | None:
    """Lease a never-used (or released) pool address; SKIP LOCKED keeps concurrent creates apart."""
    candidate = (
        select(deposit_addresses.c.id)
        .where(
            deposit_addresses.c.merchant_id == merchant_id,
            deposit_addresses.c.family == family,
            deposit_addresses.c.mode == mode,
            deposit_addresses.c.session_id.is_(None),
        )
        .order_by(deposit_addresses.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return await _lease(conn, candidate, session_id, leased_until)


async def lease_lapsed(
    conn: AsyncConnection,
    *,
    merchant_id: str,
    family: str,
    mode: str,
    session_id: str,
    leased_until: datetime,
    now: datetime,
) -> str | None:
    """Re-lease a pool address whose lease ended and whose last session is no longer live.

    Only pool addresses come back: an xpub always has a fresh index, so a late payment to an
    xpub address can never land on a newer session.
    """
    holder = checkout_sessions.alias("holder")
    candidate = (
        select(deposit_addresses.c.id)
        .where(
            deposit_addresses.c.merchant_id == merchant_id,
            deposit_addresses.c.family == family,
            deposit_addresses.c.mode == mode,
            deposit_addresses.c.source == POOL,
            deposit_addresses.c.leased_until < now,
            ~exists().where(
                and_(
                    holder.c.id == deposit_addresses.c.session_id,
                    holder.c.status.in_(LIVE_STATUSES),
                )
            ),
        )
        .order_by(deposit_addresses.c.leased_until)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return await _lease(conn, candidate, session_id, leased_until)


async def _lease(
    conn: AsyncConnection, candidate: object, session_id: str, leased_until: datetime
) -> str | None:
    statement = (
        update(deposit_addresses)
        .where(deposit_addresses.c.id == candidate)
        .values(session_id=session_id, leased_until=leased_until)
        .returning(deposit_addresses.c.address)
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else str(row.address)


async def insert_pool(
    conn: AsyncConnection, *, merchant_id: str, family: str, mode: str, addresses: Sequence[str]
) -> int:
    """Add addresses to a pool; ones already known (anywhere) are skipped. Returns how many."""
    if not addresses:
        return 0
    statement = (
        pg_insert(deposit_addresses)
        .values(
            [
                {
                    "merchant_id": merchant_id,
                    "family": family,
                    "mode": mode,
                    "address": address,
                    "source": POOL,
                }
                for address in addresses
            ]
        )
        .on_conflict_do_nothing(constraint="uq_deposit_addresses_address")
        .returning(deposit_addresses.c.id)
    )
    return len((await conn.execute(statement)).all())
