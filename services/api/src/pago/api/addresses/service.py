"""Allocating a session's deposit address.

Strategy per (merchant, chain family, mode): an active xpub wins — the address is derived at a
fresh index from the xpub's Postgres sequence, so it has never been shown to anyone before;
otherwise an address is leased from the imported pool (Solana always, any family optionally).
An address is held by one session at a time: the lease row in ``deposit_addresses`` says which,
and the database refuses two live sessions on one address (``uq_sessions_live_pay_address``).

A pool address goes back into use only after a cool-down (``PAGO_ADDRESS_COOLDOWN_DAYS``,
30 by default) counted from when its last session ended, never while a payment exception on
one of its sessions is open, least recently used first. A pool with nothing to lease answers
503 ``address_pool_exhausted`` rather than shortening the cool-down: a late payment for an old
session, or a customer paying again from an address book, must not credit someone else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.addresses import repository
from pago.api.addresses.codec import MAX_INDEX, derivable, derive_address
from pago.api.addresses.pool import POOL_EXHAUSTED, PoolRefiller
from pago.api.errors import AddressPoolExhausted
from pago.common.enums import ChainFamily, Mode

log = logging.getLogger(__name__)

_DERIVE_ATTEMPTS = 5
"""Indexes tried when a derived address already exists (an xpub registered twice)."""
_SEQUENCE_EXHAUSTED = "2200H"
"""SQLSTATE of ``nextval`` past MAXVALUE (the sequence stops at the last BIP32 index)."""


@dataclass(frozen=True, slots=True)
class Allocation:
    address: str
    derivation_index: int | None


async def allocate(
    conn: AsyncConnection,
    *,
    merchant_id: str,
    family: ChainFamily,
    mode: Mode,
    session_id: str,
    leased_until: datetime,
    now: datetime,
    cooldown: timedelta,
    refiller: PoolRefiller | None = None,
) -> Allocation:
    """Lease an address to ``session_id`` until ``leased_until``, or ``AddressPoolExhausted``.

    ``refiller`` (development only) tops an empty pool up with generated keys before giving up.
    """
    if derivable(family):
        for _ in range(_DERIVE_ATTEMPTS):
            try:
                nxt = await repository.next_xpub_index(conn, merchant_id, family.value, mode.value)
            except DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) != _SEQUENCE_EXHAUSTED:
                    raise
                log.error("xpub index sequence exhausted", extra={"merchant_id": merchant_id})
                raise AddressPoolExhausted(
                    f"The {family} xpub has no derivation index left; register a new one.",
                    retry_after=3600,
                ) from exc
            if nxt is None:
                break
            if nxt.index > MAX_INDEX:
                raise AddressPoolExhausted(
                    f"The {family} xpub has no derivation index left; register a new one.",
                    retry_after=3600,
                )
            derived = derive_address(nxt.xpub, family, nxt.index)
            if await repository.insert_derived(
                conn,
                merchant_id=merchant_id,
                family=family.value,
                mode=mode.value,
                address=derived,
                xpub_id=nxt.xpub_id,
                index=nxt.index,
                session_id=session_id,
                leased_until=leased_until,
            ):
                return Allocation(derived, nxt.index)
    lease = repository.PoolLease(
        merchant_id, family.value, mode.value, session_id=session_id, leased_until=leased_until
    )
    address = await _lease_pooled(conn, lease, now=now, cooldown=cooldown)
    if address is None and refiller is not None and mode is Mode.TEST:
        address = await _lease_refilled(conn, refiller, family, lease)
    if address is None:
        POOL_EXHAUSTED.labels(family.value, mode.value).inc()
        log.warning(
            "deposit address pool exhausted",
            extra={"merchant_id": merchant_id, "family": family.value, "mode": mode.value},
        )
        raise AddressPoolExhausted(
            f"No free {family} deposit address in {mode} mode; import more addresses into the "
            "pool or register an xpub.",
            retry_after=60,
        )
    return Allocation(address, None)


async def _lease_refilled(
    conn: AsyncConnection,
    refiller: PoolRefiller,
    family: ChainFamily,
    lease: repository.PoolLease,
) -> str | None:
    """Development (test mode only): lease from a pool that a concurrent create just refilled,
    or refill it."""
    await refiller.wait_for_refills(conn, lease.merchant_id, family, lease.mode)
    address = await repository.lease_free(conn, lease)
    if address is None and await refiller.refill(conn, lease.merchant_id, family, lease.mode):
        address = await repository.lease_free(conn, lease)
    return address


async def _lease_pooled(
    conn: AsyncConnection, lease: repository.PoolLease, *, now: datetime, cooldown: timedelta
) -> str | None:
    """A never-used pool address first, else the least recently used one that cooled down."""
    address = await repository.lease_free(conn, lease)
    if address is not None:
        return address
    return await repository.lease_cooled(conn, lease, now=now, cooldown=cooldown)


async def release(
    conn: AsyncConnection,
    *,
    session_id: str,
    family: ChainFamily,
    mode: Mode,
    address: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """``session_id`` ended at ``now``: its address starts its cool-down."""
    await repository.release(
        conn,
        session_id=session_id,
        family=family.value,
        mode=mode.value,
        address=address,
        expires_at=expires_at,
        now=now,
    )
