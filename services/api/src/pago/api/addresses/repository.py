"""SQL of deposit addresses: xpub index sequences, leases, pools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, cast, exists, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import (
    checkout_sessions,
    deposit_addresses,
    deposit_xpubs,
    payment_exceptions,
)
from pago.common.enums import LIVE_STATUSES, ExceptionStatus

POOL = "pool"


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


@dataclass(frozen=True, slots=True)
class PoolLease:
    """A lease to take from one pool: whose pool (merchant, family, mode), for which session,
    until when."""

    merchant_id: str
    family: str
    mode: str
    session_id: str
    leased_until: datetime


async def lease_free(conn: AsyncConnection, lease: PoolLease) -> str | None:
    """Lease a never-used pool address, oldest import first (the least recently used of all);
    ``SKIP LOCKED`` keeps concurrent creates apart."""
    candidate = (
        select(deposit_addresses.c.id)
        .where(
            deposit_addresses.c.merchant_id == lease.merchant_id,
            deposit_addresses.c.family == lease.family,
            deposit_addresses.c.mode == lease.mode,
            deposit_addresses.c.session_id.is_(None),
        )
        .order_by(deposit_addresses.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return await _lease(conn, candidate, lease)


def _open_exception_on(address: object, merchant_id: object, mode: object) -> Any:
    """An open payment exception on any session that was ever paid at ``address``.

    Sessions of one pool address all belong to the pool's merchant, so the open cases are a
    range of ``ix_payment_exceptions_merchant`` joined to their sessions by primary key.
    """
    case_session = checkout_sessions.alias("case_session")
    return (
        exists()
        .select_from(
            payment_exceptions.join(
                case_session, case_session.c.id == payment_exceptions.c.session_id
            )
        )
        .where(
            payment_exceptions.c.merchant_id == merchant_id,
            payment_exceptions.c.mode == mode,
            payment_exceptions.c.status == ExceptionStatus.OPEN.value,
            case_session.c.pay_address == address,
        )
    )


def _live_session_on(address: object, mode: object) -> Any:
    """A payable session at ``address`` (served by ``uq_sessions_live_pay_address``)."""
    holder = checkout_sessions.alias("holder")
    return exists().where(
        holder.c.mode == mode,
        holder.c.pay_address == address,
        holder.c.status.in_([s.value for s in LIVE_STATUSES]),
    )


async def lease_cooled(
    conn: AsyncConnection, lease: PoolLease, *, now: datetime, cooldown: timedelta
) -> str | None:
    """Re-lease the least recently used pool address that has cooled down.

    An address qualifies once its last session ended at least ``cooldown`` ago and its lease
    (the watch window, extended by Underpaid payments) is over, while no payment exception on
    any of its sessions is open and no session on it is payable. Only pool addresses come
    back: an xpub always has a fresh index, so a late payment to an xpub address can never land
    on a newer session. ``SKIP LOCKED`` keeps concurrent creates on distinct addresses.
    """
    da = deposit_addresses
    candidate = (
        select(da.c.id)
        .where(
            da.c.merchant_id == lease.merchant_id,
            da.c.family == lease.family,
            da.c.mode == lease.mode,
            da.c.source == POOL,
            da.c.released_at.is_not(None),
            da.c.released_at <= now - cooldown,
            or_(da.c.leased_until.is_(None), da.c.leased_until <= now),
            ~_open_exception_on(da.c.address, da.c.merchant_id, da.c.mode),
            ~_live_session_on(da.c.address, da.c.mode),
        )
        .order_by(da.c.released_at, da.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return await _lease(conn, candidate, lease)


async def release(
    conn: AsyncConnection,
    *,
    session_id: str,
    family: str,
    mode: str,
    address: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """``session_id`` reached a terminal status at ``now``: its address starts cooling down
    from the later of ``expires_at`` and ``now`` (a no-op if the address moved on)."""
    await conn.execute(
        update(deposit_addresses)
        .where(
            deposit_addresses.c.family == family,
            deposit_addresses.c.mode == mode,
            deposit_addresses.c.address == address,
            deposit_addresses.c.session_id == session_id,
            deposit_addresses.c.released_at.is_(None),
        )
        .values(released_at=func.greatest(expires_at, now))
    )


async def _lease(conn: AsyncConnection, candidate: object, lease: PoolLease) -> str | None:
    statement = (
        update(deposit_addresses)
        .where(deposit_addresses.c.id == candidate)
        .values(session_id=lease.session_id, leased_until=lease.leased_until, released_at=None)
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


@dataclass(frozen=True, slots=True)
class PoolDepth:
    """Addresses of one pool (merchant, chain family, mode) by state.

    ``available`` = ``never_used`` + ``cooled``: what a create can lease now. ``cooling``: its
    last session ended less than the cool-down ago (or its lease is still running). ``held``:
    an open payment exception on one of its sessions keeps it out whatever its age. ``leased``:
    its session is still payable (or has not been recorded as ended).
    """

    merchant_id: str
    family: str
    mode: str
    total: int
    never_used: int
    cooled: int
    cooling: int
    held: int
    leased: int
    derived: bool
    """The merchant has an active xpub for this family and mode: creates derive, the pool idles."""

    @property
    def available(self) -> int:
        return self.never_used + self.cooled


_POOL_DEPTH = """
    WITH held AS (
        SELECT DISTINCT e.merchant_id, e.mode, s.pay_address AS address
        FROM payment_exceptions AS e
        JOIN checkout_sessions AS s ON s.id = e.session_id
        WHERE e.status = :open {exception_filter}
    )
    SELECT d.merchant_id, d.family, d.mode,
        count(*) AS total,
        count(*) FILTER (WHERE d.session_id IS NULL) AS never_used,
        count(*) FILTER (WHERE d.released_at IS NOT NULL AND h.address IS NULL
            AND d.released_at <= :cutoff
            AND (d.leased_until IS NULL OR d.leased_until <= :now)) AS cooled,
        count(*) FILTER (WHERE d.released_at IS NOT NULL AND h.address IS NULL
            AND (d.released_at > :cutoff OR d.leased_until > :now)) AS cooling,
        count(*) FILTER (WHERE d.released_at IS NOT NULL AND h.address IS NOT NULL) AS held,
        count(*) FILTER (WHERE d.session_id IS NOT NULL AND d.released_at IS NULL) AS leased,
        bool_or(x.id IS NOT NULL) AS derived
    FROM deposit_addresses AS d
    LEFT JOIN held AS h
      ON h.merchant_id = d.merchant_id AND h.mode = d.mode AND h.address = d.address
    LEFT JOIN deposit_xpubs AS x
      ON x.merchant_id = d.merchant_id AND x.family = d.family AND x.mode = d.mode
         AND x.retired_at IS NULL
    WHERE d.source = 'pool' {pool_filter}
    GROUP BY d.merchant_id, d.family, d.mode
    ORDER BY d.merchant_id, d.family, d.mode
"""


async def pool_depth(
    conn: AsyncConnection,
    *,
    now: datetime,
    cooldown: timedelta,
    merchant_id: str | None = None,
) -> list[PoolDepth]:
    """Every pool's depth (or one merchant's pools), by the rules of :func:`lease_cooled`."""
    params: dict[str, Any] = {
        "open": ExceptionStatus.OPEN.value,
        "now": now,
        "cutoff": now - cooldown,
    }
    exception_filter = pool_filter = ""
    if merchant_id is not None:
        params["merchant_id"] = merchant_id
        exception_filter = "AND e.merchant_id = :merchant_id"
        pool_filter = "AND d.merchant_id = :merchant_id"
    statement = text(_POOL_DEPTH.format(exception_filter=exception_filter, pool_filter=pool_filter))
    return [
        PoolDepth(
            merchant_id=row.merchant_id,
            family=row.family,
            mode=row.mode,
            total=int(row.total),
            never_used=int(row.never_used),
            cooled=int(row.cooled),
            cooling=int(row.cooling),
            held=int(row.held),
            leased=int(row.leased),
            derived=bool(row.derived),
        )
        for row in await conn.execute(statement, params)
    ]


_REFILL_LOCKS = 0x706F6F6C  # "pool": keeps these advisory locks apart from the outbox's


async def try_lock_pool(conn: AsyncConnection, merchant_id: str, family: str, mode: str) -> bool:
    """Take the transaction-scoped lock that lets one process at a time refill this pool."""
    result = await conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))"),
        {"ns": _REFILL_LOCKS, "key": f"{merchant_id}:{family}:{mode}"},
    )
    return bool(result.scalar_one())


async def has_pool(conn: AsyncConnection, merchant_id: str, family: str, mode: str) -> bool:
    """Whether the merchant imported (or was seeded) any pool address of family and mode."""
    statement = select(
        exists().where(
            deposit_addresses.c.merchant_id == merchant_id,
            deposit_addresses.c.family == family,
            deposit_addresses.c.mode == mode,
            deposit_addresses.c.source == POOL,
        )
    )
    return bool((await conn.execute(statement)).scalar_one())


async def lock_pool(conn: AsyncConnection, merchant_id: str, family: str, mode: str) -> None:
    """The same lock, waiting for a refill in another transaction to commit (or roll back)."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
        {"ns": _REFILL_LOCKS, "key": f"{merchant_id}:{family}:{mode}"},
    )
