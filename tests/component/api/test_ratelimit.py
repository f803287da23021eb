"""Rate limits: per API key, and per client IP for requests without a valid key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.auth.keys import generate_key
from pago.api.settings import ApiSettings
from pago.common.enums import Mode
from tests.support.api import Merchant, assert_error, crypto_body, running_app

URL = "/v1/checkout/sessions"


def limited(settings: ApiSettings) -> ApiSettings:
    return settings.model_copy(
        update={
            "rate_limit_per_second": 0.5,
            "rate_limit_burst": 3,
            "ip_rate_limit_per_second": 0.5,
            "ip_rate_limit_burst": 2,
        }
    )


class TestRateLimit:
    async def test_a_key_over_its_burst_gets_429_with_retry_after(
        self,
        settings: ApiSettings,
        merchant: Merchant,
        other_merchant: Merchant,
        db: AsyncEngine,
        redis: Redis,
    ) -> None:
        async with running_app(limited(settings)) as (_, client):
            statuses = [
                (await client.get(URL, headers=merchant.headers())).status_code for _ in range(3)
            ]
            assert statuses == [200, 200, 200]
            response = await client.get(URL, headers=merchant.headers())
            error = assert_error(response, 429, "rate_limited")
            assert error["type"] == "invalid_request_error"
            assert 1 <= int(response.headers["retry-after"]) <= 2
            # Keys have their own buckets (the live key, another merchant).
            assert (await client.get(URL, headers=merchant.headers(Mode.LIVE))).status_code == 200
            assert (await client.get(URL, headers=other_merchant.headers())).status_code == 200

    async def test_unknown_keys_count_against_the_client_ip(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        async with running_app(limited(settings)) as (_, client):
            random_keys = [{"Authorization": f"Bearer {generate_key(Mode.TEST)}"} for _ in range(3)]
            statuses = [(await client.get(URL, headers=h)).status_code for h in random_keys]
            assert statuses == [401, 401, 429]
            assert_error(await client.get(URL), 429, "rate_limited")  # no key at all: same bucket
            # A valid key is not held back by the IP's failures.
            assert (await client.get(URL, headers=merchant.headers())).status_code == 200

    async def test_the_bucket_refills(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        fast = settings.model_copy(update={"rate_limit_per_second": 20.0, "rate_limit_burst": 1})
        async with running_app(fast) as (_, client):
            assert (await client.get(URL, headers=merchant.headers())).status_code == 200
            assert (await client.get(URL, headers=merchant.headers())).status_code == 429
            import asyncio

            await asyncio.sleep(0.06)
            assert (await client.get(URL, headers=merchant.headers())).status_code == 200

    async def test_idempotent_requests_are_limited_too(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        async with running_app(limited(settings)) as (_, client):
            headers = merchant.headers(idempotency_key="x")
            statuses = [
                (await client.post(URL, json={}, headers=headers)).status_code for _ in range(4)
            ]
            assert statuses == [400, 400, 400, 429]


async def test_limits_are_off_the_hot_path_of_other_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200


def public_limited(settings: ApiSettings) -> ApiSettings:
    return settings.model_copy(
        update={"public_rate_limit_per_second": 0.5, "public_rate_limit_burst": 3}
    )


@asynccontextmanager
async def as_client(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


class TestPublicRateLimit:
    """Routes without an API key (the hosted page, its stream, probes, documents) are limited
    per client IP, so nobody can flood the page or its SSE stream."""

    async def test_the_hosted_page_over_the_limit_is_a_plain_429_page(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        async with running_app(public_limited(settings)) as (app, _):
            async with as_client(app, "203.0.113.7") as payer:
                created = await payer.post(URL, json=crypto_body(), headers=merchant.headers())
                assert created.status_code == 201, created.text
                session_id = created.json()["id"]
                statuses = [
                    (await payer.get(f"/checkout/{session_id}")).status_code for _ in range(3)
                ]
                assert statuses == [200, 200, 200]
                page = await payer.get(f"/checkout/{session_id}")
                assert page.status_code == 429
                assert page.headers["content-type"].startswith("text/html")
                assert 1 <= int(page.headers["retry-after"]) <= 2
                assert "Too many requests" in page.text
                # The JSON and stream routes of the same client answer the error envelope.
                for path in (f"/v1/checkout/sessions/{session_id}/events", "/healthz"):
                    assert_error(await payer.get(path), 429, "rate_limited")
                # Authenticated API calls are limited per key, not by the public bucket.
                listed = await payer.get(URL, headers=merchant.headers())
                assert listed.status_code == 200
            async with as_client(app, "198.51.100.9") as other_payer:
                assert (await other_payer.get(f"/checkout/{session_id}")).status_code == 200

    async def test_the_card_api_is_limited_per_client_not_by_the_public_bucket(
        self, settings: ApiSettings, db: AsyncEngine, redis: Redis
    ) -> None:
        async with (
            running_app(public_limited(settings)) as (app, _),
            as_client(app, "203.0.113.10") as caller,
        ):
            while (await caller.get("/healthz")).status_code != 429:
                pass  # the public bucket of this IP is empty
            path = "/api/v1/sessions/e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"
            for _ in range(3):
                assert (await caller.get(path)).status_code != 429
            # Provider webhooks are public: the per-IP bucket still applies to them.
            assert_error(await caller.post("/api/v1/webhooks/stripe"), 429, "rate_limited")

    async def test_the_asyncapi_documents_are_limited_too(
        self, settings: ApiSettings, db: AsyncEngine, redis: Redis
    ) -> None:
        async with (
            running_app(public_limited(settings)) as (app, _),
            as_client(app, "203.0.113.9") as visitor,
        ):
            for path in ("/asyncapi.json", "/asyncapi", "/asyncapi.json"):
                assert (await visitor.get(path)).status_code == 200
            assert_error(await visitor.get("/asyncapi.json"), 429, "rate_limited")
            page = await visitor.get("/asyncapi")
            assert page.status_code == 429
            assert "Too many requests" in page.text

    async def test_documents_and_assets_are_limited_too(
        self, settings: ApiSettings, db: AsyncEngine, redis: Redis
    ) -> None:
        async with (
            running_app(public_limited(settings)) as (app, _),
            as_client(app, "203.0.113.8") as visitor,
        ):
            for path in ("/openapi.json", "/checkout/assets/checkout.css", "/docs"):
                assert (await visitor.get(path)).status_code == 200
            assert_error(await visitor.get("/openapi.json"), 429, "rate_limited")
            docs = await visitor.get("/docs")
            assert docs.status_code == 429
            assert "Too many requests" in docs.text
