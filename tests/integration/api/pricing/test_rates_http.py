"""The HTTP exchange-rate provider against a local price server (CoinGecko's shape)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from tests.support.api import Merchant, assert_error, crypto_body, running_app

URL = "/v1/checkout/sessions"


@dataclass
class PriceServer:
    url: str
    document: Any = field(default_factory=dict)
    """A JSON-able value, or the raw body text (to keep every digit of a number)."""
    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def prices() -> AsyncIterator[PriceServer]:
    server = PriceServer(url="")

    async def simple_price(request: web.Request) -> web.Response:
        server.requests.append(dict(request.query))
        if server.status != 200:
            return web.Response(status=server.status, text="rate limited")
        text = server.document if isinstance(server.document, str) else json.dumps(server.document)
        return web.Response(text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v3/simple/price", simple_price)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/api/v3/simple/price"
    try:
        yield server
    finally:
        await runner.cleanup()


def quotes(updated: float, **rates: float | str) -> dict[str, Any]:
    return {
        "tether": {**rates, "last_updated_at": int(updated)},
        "usd-coin": {**rates, "last_updated_at": int(updated)},
    }


@pytest.fixture
async def client(
    settings: ApiSettings, prices: PriceServer, db: AsyncEngine, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    http = settings.model_copy(update={"rate_provider": "http", "rate_http_url": prices.url})
    async with running_app(http) as (_, client):
        yield client


class TestHttpRates:
    async def test_prices_at_the_fetched_rate_and_caches_it(
        self, client: httpx.AsyncClient, prices: PriceServer, merchant: Merchant
    ) -> None:
        prices.document = quotes(time.time(), usd=0.9991, eur=0.85, jpy=150.5)
        body = crypto_body(pricing_amount="10", pricing_currency="EUR")
        first = await client.post(URL, json=body, headers=merchant.headers())
        assert first.status_code == 201, first.text
        # 10 / 0.85 = 11.7647… → 11.77
        assert first.json()["amount"] == "11.77"
        assert first.json()["pricing"]["exchange_rate"] == "0.85000000"
        query = prices.requests[0]
        assert set(query["ids"].split(",")) == {"tether", "usd-coin"}
        assert {"usd", "eur", "jpy", "krw"} <= set(query["vs_currencies"].split(","))
        assert query["include_last_updated_at"] == "true"
        usd = await client.post(
            URL,
            json=crypto_body(pricing_amount="10", pricing_currency="USD"),
            headers=merchant.headers(),
        )
        assert usd.json()["pricing"]["exchange_rate"] == "0.99910000"
        assert len(prices.requests) == 1  # one fetch served both (Redis cache)

    async def test_decimals_are_exact_and_quantized_to_8_places(
        self, client: httpx.AsyncClient, prices: PriceServer, merchant: Merchant
    ) -> None:
        # As a float this is 1.000000015, which would round to 1.00000002.
        now = int(time.time())
        prices.document = (
            f'{{"tether": {{"usd": 1.000000014999999999, "last_updated_at": {now}}},'
            f' "usd-coin": {{"usd": 1, "last_updated_at": {now}}}}}'
        )
        body = crypto_body(pricing_amount="1000", pricing_currency="USD")
        response = await client.post(URL, json=body, headers=merchant.headers())
        assert response.json()["pricing"]["exchange_rate"] == "1.00000001"
        # 1000 / 1.00000001 = 999.99999000… → 1000.00
        assert response.json()["amount"] == "1000"

    async def test_a_stale_rate_is_refused(
        self, client: httpx.AsyncClient, prices: PriceServer, merchant: Merchant
    ) -> None:
        prices.document = quotes(time.time() - 3601, usd=1.0)
        body = crypto_body(pricing_amount="10", pricing_currency="USD")
        error = assert_error(
            await client.post(URL, json=body, headers=merchant.headers()),
            503,
            "exchange_rate_unavailable",
        )
        assert "older than 3600" in error["message"]
        # Crypto pricing needs no rate and still works.
        assert (
            await client.post(URL, json=crypto_body(), headers=merchant.headers())
        ).status_code == 201

    @pytest.mark.parametrize("document", [{"tether": {}}, {"unexpected": True}, []])
    async def test_a_missing_rate_is_503(
        self, client: httpx.AsyncClient, prices: PriceServer, merchant: Merchant, document: Any
    ) -> None:
        prices.document = document
        body = crypto_body(pricing_amount="10", pricing_currency="USD")
        assert_error(
            await client.post(URL, json=body, headers=merchant.headers()),
            503,
            "exchange_rate_unavailable",
        )

    async def test_a_failing_source_is_503(
        self, client: httpx.AsyncClient, prices: PriceServer, merchant: Merchant
    ) -> None:
        prices.status = 429
        body = crypto_body(pricing_amount="10", pricing_currency="USD")
        response = await client.post(URL, json=body, headers=merchant.headers())
        assert_error(response, 503, "exchange_rate_unavailable")
        assert int(response.headers["retry-after"]) > 0
