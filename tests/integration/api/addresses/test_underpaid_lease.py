"""The lease and the watch follow the Underpaid extension (issue 11, item 3).

An underpayment moves ``expires_at`` a day later; before, the address's lease and the watcher's
``watch_until`` stayed where the api set them, so the rest of the payment could arrive after
the watcher stopped looking, and the address could be leased to someone else meanwhile.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.common.db.schema import outbox
from pago.common.enums import SessionStatus
from pago.common.events import WatchAddress
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key
from tests.integration.api.addresses.support import (
    created,
    lease_row,
    pay,
    pool_merchant,
    spec_of,
)
from tests.support.matcher import session_row


async def watches(db: AsyncEngine, address: str) -> list[WatchAddress]:
    """The WatchAddress records waiting in the outbox for ``address``, in write order."""
    async with db.connect() as conn:
        result = await conn.execute(
            select(outbox.c.value)
            .where(
                outbox.c.topic == CHAIN_WATCHLIST,
                outbox.c.key == watchlist_key("SOLANA", "test", address),
            )
            .order_by(outbox.c.id)
        )
        return [WatchAddress.model_validate_json(value) for (value,) in result]


class TestUnderpaidExtension:
    async def test_the_lease_and_watch_until_move_with_expires_at(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        merchant = await pool_merchant(db, settings, 1)
        session = await created(client, merchant)
        address = session["pay_address"]
        before = await session_row(db, session["id"])
        lease = await lease_row(db, address)
        grace = lease["leased_until"] - before["expires_at"]
        assert grace == timedelta(minutes=settings.watch_grace_minutes)
        [at_create] = await watches(db, address)
        assert at_create.watch_until == lease["leased_until"]

        spec = spec_of(session, merchant)
        await pay(db, spec, int(before["amount_expected"]) // 2)
        underpaid = await session_row(db, session["id"])
        assert underpaid["status"] == SessionStatus.UNDERPAID
        assert underpaid["expires_at"] > before["expires_at"]
        extended = await lease_row(db, address)
        assert extended["leased_until"] == underpaid["expires_at"] + grace
        assert extended["session_id"] == session["id"]
        assert extended["released_at"] is None
        # In the same transaction, a new WatchAddress tells the watcher to keep looking.
        _, after_extension = await watches(db, address)
        assert after_extension.session_id == session["id"]
        assert after_extension.watch_until == extended["leased_until"]
        assert after_extension.created_at == before["created_at"]

        await pay(db, spec, int(before["amount_expected"]) - int(before["amount_expected"]) // 2)
        paid = await session_row(db, session["id"])
        assert paid["status"] == SessionStatus.PAID
        # Paid before its (extended) expiry: the cool-down counts from that expiry.
        assert (await lease_row(db, address))["released_at"] == paid["expires_at"]
        assert len(await watches(db, address)) == 2  # nothing more to watch for
