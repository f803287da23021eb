"""``RoutingSignals`` over routing's two sources: the circuit breaker in Redis
(``routing.health``) and the outcome statistics in Postgres (``stats_repository``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.cards import stats_repository
from pago.api.cards.routing.health import CircuitBreaker
from pago.api.cards.routing.model import Health, RouteStats
from pago.api.cards.stats_repository import RouteStatsCache
from pago.common.enums import CardProvider, CardSessionStatus


class BreakerAndStats:
    def __init__(self, breaker: CircuitBreaker, stats: RouteStatsCache) -> None:
        self._breaker = breaker
        self._stats = stats

    async def health(self, providers: Sequence[CardProvider]) -> Mapping[CardProvider, Health]:
        return await self._breaker.health(providers)

    async def acquire(self, provider: CardProvider) -> bool:
        return await self._breaker.acquire(provider)

    async def record_call(self, provider: CardProvider, *, ok: bool, latency_ms: int) -> None:
        await self._breaker.record(provider, ok=ok, latency_ms=latency_ms)

    async def stats(
        self, conn: AsyncConnection, currency: str, country: str
    ) -> Mapping[CardProvider, RouteStats]:
        return await self._stats.read(conn, currency, country)

    async def record_attempt(
        self, conn: AsyncConnection, provider: CardProvider, currency: str, country: str
    ) -> None:
        await stats_repository.record_attempt(conn, provider, currency, country)

    async def record_outcome(
        self,
        conn: AsyncConnection,
        provider: CardProvider,
        currency: str,
        country: str,
        outcome: CardSessionStatus,
    ) -> None:
        await stats_repository.record_outcome(conn, provider, currency, country, outcome)
