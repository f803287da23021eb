"""The one builder of ``chain.watchlist`` records, for every producer (api and matcher).

A watcher keeps the newest record per key, so a later record for the same address (a lease
extended by an Underpaid payment) replaces the earlier one's ``watch_until``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pago.common.enums import Mode, Network
from pago.common.events import WatchAddress
from pago.common.outbox import OutboxMessage
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key

DEFAULT_WATCH_GRACE = timedelta(hours=24)
"""How long after ``expires_at`` an address stays watched (and leased) by default: late
payments still reach their session. The api's ``PAGO_WATCH_GRACE_MINUTES`` sets it."""


def watch_address(
    *,
    network: Network,
    mode: Mode,
    address: str,
    session_id: str,
    watch_until: datetime,
    created_at: datetime,
) -> OutboxMessage:
    """``WatchAddress`` for ``address`` until ``watch_until`` (the end of its lease), as an
    outbox message keyed ``{network}:{mode}:{address}``.

    ``created_at`` is the session's creation time: the watcher back-fills from the block at that
    time, so a record that reaches it late still finds a payment made right after creation.
    """
    event = WatchAddress(
        network=network,
        mode=mode,
        address=address,
        session_id=session_id,
        watch_until=watch_until,
        created_at=created_at,
    )
    return OutboxMessage.of(
        CHAIN_WATCHLIST, watchlist_key(network.value, mode.value, address), event
    )
