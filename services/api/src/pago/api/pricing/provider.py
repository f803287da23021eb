"""Exchange-rate providers: where "fiat units per 1 token" comes from.

``StaticRateProvider`` serves a configured table (dev and tests); ``HttpRateProvider`` reads a
CoinGecko-compatible ``/simple/price`` endpoint. Every rate carries the time its source quoted
it, so the pricing service can refuse a stale one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol

import httpx

from pago.common.enums import Token


class RateUnavailable(Exception):
    """The provider has no usable rate for the pair right now."""


@dataclass(frozen=True, slots=True)
class Rate:
    value: Decimal
    """Fiat units per 1 token."""
    as_of: datetime
    """When the source quoted it (not when we fetched it)."""
    source: str


class RateProvider(Protocol):
    name: str
    cacheable: bool
    """Whether fetched rates are worth caching in Redis (a network source is; a table is not)."""

    async def fetch(self, fiat: str, token: Token) -> Mapping[tuple[str, Token], Rate]:
        """Rates including ``(fiat, token)``; a provider may return more pairs than asked for
        (one call refreshes the whole table). Raises ``RateUnavailable``."""
        ...


class StaticRateProvider:
    name = "static"
    cacheable = False

    def __init__(
        self,
        table: Mapping[str, Mapping[Token, Decimal]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._table = {fiat.upper(): dict(row) for fiat, row in table.items()}
        self._clock = clock

    async def fetch(self, fiat: str, token: Token) -> Mapping[tuple[str, Token], Rate]:
        try:
            value = self._table[fiat][token]
        except KeyError:
            raise RateUnavailable(f"no {fiat}/{token} rate configured") from None
        return {(fiat, token): Rate(value, self._clock(), self.name)}


DEFAULT_COIN_IDS: Mapping[Token, str] = {Token.USDT: "tether", Token.USDC: "usd-coin"}


class HttpRateProvider:
    """``GET <url>?ids=tether,usd-coin&vs_currencies=usd,eur,…&include_last_updated_at=true``.

    The response is ``{"tether": {"usd": 1.0002, "eur": 0.86, "last_updated_at": <unix>}, …}``.
    Numbers are parsed as ``Decimal`` straight from the JSON text (never through float). One
    request fetches every pair; concurrent misses share it.
    """

    name = "http"
    cacheable = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        fiats: Iterable[str],
        *,
        api_key: str | None = None,
        coin_ids: Mapping[Token, str] = DEFAULT_COIN_IDS,
    ) -> None:
        self._client = client
        self._url = url
        self._fiats = sorted({f.upper() for f in fiats})
        self._api_key = api_key
        self._coin_ids = dict(coin_ids)
        self._inflight: asyncio.Future[dict[tuple[str, Token], Rate]] | None = None

    async def fetch(self, fiat: str, token: Token) -> Mapping[tuple[str, Token], Rate]:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch_all())
            self._inflight.add_done_callback(self._clear)
        rates = await asyncio.shield(self._inflight)
        if (fiat, token) not in rates:
            raise RateUnavailable(f"{self._url} has no {fiat}/{token} rate")
        return rates

    def _clear(self, _: asyncio.Future[dict[tuple[str, Token], Rate]]) -> None:
        self._inflight = None

    async def _fetch_all(self) -> dict[tuple[str, Token], Rate]:
        params = {
            "ids": ",".join(self._coin_ids[t] for t in Token),
            "vs_currencies": ",".join(f.lower() for f in self._fiats),
            "include_last_updated_at": "true",
            "precision": "full",
        }
        headers = {"accept": "application/json"}
        if self._api_key:
            headers["x-cg-demo-api-key"] = self._api_key
        try:
            response = await self._client.get(self._url, params=params, headers=headers)
            response.raise_for_status()
            document = json.loads(response.text, parse_float=Decimal, parse_int=Decimal)
        except (httpx.HTTPError, ValueError) as exc:
            raise RateUnavailable(f"rate source failed: {exc.__class__.__name__}") from exc
        if not isinstance(document, dict):
            raise RateUnavailable("rate source returned an unexpected document")
        rates: dict[tuple[str, Token], Rate] = {}
        fetched = datetime.now(UTC)
        for token, coin in self._coin_ids.items():
            quotes = document.get(coin)
            if not isinstance(quotes, dict):
                continue
            as_of = _timestamp(quotes.get("last_updated_at")) or fetched
            for fiat in self._fiats:
                value = quotes.get(fiat.lower())
                if isinstance(value, Decimal) and value.is_finite() and value > 0:
                    rates[(fiat, token)] = Rate(value, as_of, self.name)
        return rates


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, Decimal):
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (InvalidOperation, OverflowError, ValueError, OSError):
        return None
