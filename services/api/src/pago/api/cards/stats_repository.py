"""SQL of routing's statistics (``card_route_stats``): what the conversion component learns.

One row per (currency, billing country, provider, hour); "recent" is the sum over the last
``window`` (default 7 days). Each write is an upsert of the current hour's row by the
transaction's ``now()``, made in the caller's transaction so a rolled-back state change counts
nothing. Call them from the card sessions service:

- ``record_attempt`` when a provider checkout was created and the payer is sent there (a
  create that failed is availability's business, the circuit breaker's, not conversion's);
- ``record_outcome`` when a session reaches its terminal status, once (in the transaction that
  moves it there, so a duplicate webhook never counts twice): ``COMPLETED`` counts as completed,
  ``FAILED`` and ``EXPIRED`` as failed (an expired checkout is a payer the provider did not
  convert); ``CANCELLED`` is the merchant's doing and counts nothing.

Concurrent sessions of one route update one row: the upsert's row lock is held until the
caller commits, so keep the transaction short (it is one request's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from sqlalchemy import Interval, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.cards.routing.model import RouteStats
from pago.common.db.schema import card_route_stats as crs
from pago.common.enums import CardProvider, CardSessionStatus

DEFAULT_WINDOW = timedelta(days=7)

_HOUR = func.date_trunc("hour", func.now(), "UTC")


async def record_attempt(
    conn: AsyncConnection, provider: CardProvider, currency: str, country: str
) -> None:
    """One more provider checkout for this route (``currency`` ISO 4217, ``country`` the
    billing address's ISO 3166-1 alpha-2)."""
    await _bump(conn, provider, currency, country, "attempts")


async def record_outcome(
    conn: AsyncConnection,
    provider: CardProvider,
    currency: str,
    country: str,
    outcome: CardSessionStatus,
) -> None:
    """The terminal ``outcome`` of a session routed to ``provider`` (see the module docstring
    for how each status counts). ``PENDING`` is not an outcome: ``ValueError``."""
    if outcome is CardSessionStatus.COMPLETED:
        await _bump(conn, provider, currency, country, "completed")
    elif outcome in (CardSessionStatus.FAILED, CardSessionStatus.EXPIRED):
        await _bump(conn, provider, currency, country, "failed")
    elif outcome is not CardSessionStatus.CANCELLED:
        raise ValueError(f"{outcome} is not a terminal outcome")


async def _bump(
    conn: AsyncConnection, provider: CardProvider, currency: str, country: str, column: str
) -> None:
    statement = insert(crs).values(
        currency=currency.upper(),
        country=country.upper(),
        provider=provider.value,
        window_start=_HOUR,
        **{column: 1},
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[crs.c.currency, crs.c.country, crs.c.provider, crs.c.window_start],
            set_={column: crs.c[column] + 1, "updated_at": func.now()},
        )
    )


async def read_stats(
    conn: AsyncConnection, currency: str, country: str, *, window: timedelta = DEFAULT_WINDOW
) -> Mapping[CardProvider, RouteStats]:
    """Every provider's counts for this route over the last ``window``, in one query (a
    primary-key range per route). Providers without a row are absent (no history)."""
    rows = await conn.execute(
        select(
            crs.c.provider,
            func.sum(crs.c.attempts),
            func.sum(crs.c.completed),
            func.sum(crs.c.failed),
        )
        .where(
            crs.c.currency == currency.upper(),
            crs.c.country == country.upper(),
            crs.c.window_start >= _HOUR - literal(window, Interval),
        )
        .group_by(crs.c.provider)
    )
    return {
        CardProvider(provider): RouteStats(int(attempts), int(completed), int(failed))
        for provider, attempts, completed, failed in rows
        if provider in CardProvider._value2member_map_
    }


async def prune(conn: AsyncConnection, *, keep: timedelta = DEFAULT_WINDOW) -> int:
    """Delete the hours older than ``keep``; returns the rows deleted."""
    result = await conn.execute(
        delete(crs).where(crs.c.window_start < _HOUR - literal(keep, Interval))
    )
    return result.rowcount


class RouteStatsCache:
    """``read_stats`` remembered per route for ``ttl_seconds`` in this process: a routing
    decision then costs a DB round trip at most once per route and TTL, not per session.

    Conversion moves slowly (a rate over days), so a few seconds' staleness changes no ranking
    that matters. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        window: timedelta = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._window = window
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Mapping[CardProvider, RouteStats]]] = {}

    async def read(
        self, conn: AsyncConnection, currency: str, country: str
    ) -> Mapping[CardProvider, RouteStats]:
        key = (currency.upper(), country.upper())
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        stats = await read_stats(conn, *key, window=self._window)
        if len(self._entries) >= 10_000:  # currencies × countries: bounded, but be sure
            self._entries.clear()
        self._entries[key] = (now, stats)
        return stats
