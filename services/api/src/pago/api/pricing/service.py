"""The pricing service: validate a price, get a fresh rate (Redis-cached), quote the amount.

A rate is *stale* once its source quoted it more than ``max_age`` ago (1 h by default); a
stale rate is never used — the request gets 503 ``exchange_rate_unavailable`` instead, because
a checkout priced on yesterday's rate is a loss for someone. The Redis cache only saves calls
to the source; when Redis is down the source is asked directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pago.api.errors import ExchangeRateUnavailable, InvalidRequest
from pago.api.pricing.currencies import FIAT_MINOR_UNITS
from pago.api.pricing.provider import Rate, RateProvider, RateUnavailable
from pago.api.pricing.quote import Quote, crypto_quote, fiat_quote
from pago.common.enums import Token
from pago.common.networks import TokenSpec

log = logging.getLogger(__name__)


class PricingService:
    def __init__(
        self,
        provider: RateProvider,
        redis: Redis,
        *,
        cache_seconds: int,
        max_age_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._provider = provider
        self._redis = redis
        self._cache_seconds = cache_seconds
        self._max_age = timedelta(seconds=max_age_seconds)
        self._clock = clock

    async def quote(self, pricing_currency: str, amount: str, token: TokenSpec) -> Quote:
        if pricing_currency in Token.__members__:
            if pricing_currency != token.symbol:
                raise InvalidRequest(
                    f"pricing_currency {pricing_currency} must equal currency {token.symbol} "
                    "(or be a fiat currency).",
                    param="pricing_currency",
                )
            return crypto_quote(amount, token.symbol, token.decimals)
        minor_units = FIAT_MINOR_UNITS[pricing_currency]
        rate = await self.rate(pricing_currency, token.symbol)
        return fiat_quote(
            amount, pricing_currency, minor_units, rate.value, token.symbol, token.decimals
        )

    async def rate(self, fiat: str, token: Token) -> Rate:
        """A rate quoted within ``max_age``, or ``ExchangeRateUnavailable``."""
        cached = await self._cached(fiat, token) if self._provider.cacheable else None
        if cached is not None and self._fresh(cached):
            return cached
        try:
            rates = await self._provider.fetch(fiat, token)
        except RateUnavailable as exc:
            log.warning(
                "exchange rate unavailable", extra={"pair": f"{fiat}/{token}", "why": str(exc)}
            )
            raise ExchangeRateUnavailable(
                f"No exchange rate for {fiat}/{token} is available right now; retry later.",
                retry_after=30,
            ) from None
        if self._provider.cacheable:
            await self._store(rates)
        rate = rates[(fiat, token)]
        if not self._fresh(rate):
            raise ExchangeRateUnavailable(
                f"The latest {fiat}/{token} rate is older than "
                f"{int(self._max_age.total_seconds())} s; retry later.",
                retry_after=30,
            )
        return rate

    def _fresh(self, rate: Rate) -> bool:
        return self._clock() - rate.as_of <= self._max_age

    def _key(self, fiat: str, token: Token) -> str:
        return f"pago:rate:{self._provider.name}:{fiat}:{token.value}"

    async def _cached(self, fiat: str, token: Token) -> Rate | None:
        try:
            raw = await self._redis.get(self._key(fiat, token))
        except RedisError:
            log.warning("rate cache unavailable (Redis); asking the source", exc_info=True)
            return None
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        value, _, as_of = text.partition("|")
        return Rate(Decimal(value), datetime.fromtimestamp(int(as_of), UTC), self._provider.name)

    async def _store(self, rates: Mapping[tuple[str, Token], Rate]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (fiat, token), rate in rates.items():
                    _ = pipe.set(
                        self._key(fiat, token),
                        f"{rate.value}|{int(rate.as_of.timestamp())}",
                        ex=self._cache_seconds,
                    )
                await pipe.execute()
        except RedisError:
            log.warning("could not cache exchange rates (Redis)", exc_info=True)
