"""Allocating a session's deposit address.

Strategy per (merchant, chain family, mode): an active xpub wins — the address is derived at a
fresh index from the xpub's Postgres sequence, so it has never been shown to anyone before;
otherwise an address is leased from the imported pool (Solana always, any family optionally).
An address is held by one session at a time: the lease row in ``deposit_addresses`` says which,
and the database refuses two live sessions on one address (``uq_sessions_live_pay_address``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.addresses import repository
from pago.api.addresses.codec import MAX_INDEX, derivable, derive_address
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
) -> Allocation:
    """Lease an address to ``session_id`` until ``leased_until``, or ``AddressPoolExhausted``."""
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
    address = await repository.lease_free(
        conn,
        merchant_id=merchant_id,
        family=family.value,
        mode=mode.value,
        session_id=session_id,
        leased_until=leased_until,
    )
    if address is None:
        address = await repository.lease_lapsed(
            conn,
            merchant_id=merchant_id,
            family=family.value,
            mode=mode.value,
            session_id=session_id,
            leased_until=leased_until,
            now=now,
        )
    if address is None:
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
