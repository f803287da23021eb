"""Redis down: a request with an Idempotency-Key gets 503, never a duplicate; others proceed."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.common.db.schema import checkout_sessions
from pago.devstack.redis_server import RedisServer
from tests.support.api import Merchant, assert_error, crypto_body, running_app

URL = "/v1/checkout/sessions"


async def _sessions(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(checkout_sessions))).scalar_one()
        )


async def test_idempotent_requests_get_503_while_redis_is_down(
    settings: ApiSettings, merchant: Merchant, db: AsyncEngine, tmp_path: Path
) -> None:
    own = RedisServer.start(tmp_path / "redis", env={})  # always a process of our own to stop
    try:
        own_settings = settings.model_copy(
            update={"redis_url": own.url, "rate_limit_per_second": 5.0, "rate_limit_burst": 100}
        )
        async with running_app(own_settings) as (_, client):
            headers = merchant.headers(idempotency_key="order-9")
            first = await client.post(URL, json=crypto_body(), headers=headers)
            assert first.status_code == 201
            own.close()

            retry = await client.post(URL, json=crypto_body(), headers=headers)
            error = assert_error(retry, 503, "service_unavailable", error_type="api_error")
            assert "Idempotency" in error["message"]
            assert int(retry.headers["retry-after"]) >= 1
            fresh = await client.post(
                URL, json=crypto_body(), headers=merchant.headers(idempotency_key="new")
            )
            assert_error(fresh, 503, "service_unavailable")
            assert await _sessions(db) == 1

            # Without a key nothing depends on Redis: the rate limiter fails open, pricing and
            # reads need no Redis.
            plain = await client.post(URL, json=crypto_body(), headers=merchant.headers())
            assert plain.status_code == 201, plain.text
            listed = await client.get(URL, headers=merchant.headers())
            assert listed.json()["meta"]["total"] == 2
            assert (await client.get("/readyz")).status_code == 503
    finally:
        own.close()
