"""Idempotency-Key: replay, conflict, in-progress, lapsed locks, scope, and no duplicates."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.auth.principal import MerchantProfile, Principal
from pago.api.idempotency import DurableStore, IdempotencyStore, fingerprint, record_key
from pago.api.settings import ApiSettings
from pago.common.db.schema import checkout_sessions, idempotency_records
from pago.common.enums import Mode
from tests.support.api import Merchant, assert_error, crypto_body, running_app

URL = "/v1/checkout/sessions"


async def post(
    client: httpx.AsyncClient, merchant: Merchant, key: str, body: Any = None, **headers: Any
) -> httpx.Response:
    return await client.post(
        URL,
        json=crypto_body(client_reference_id="order-1") if body is None else body,
        headers=merchant.headers(idempotency_key=key, **headers),
    )


async def count_sessions(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(checkout_sessions))).scalar_one()
        )


class TestReplay:
    async def test_same_key_and_body_replays_the_stored_response(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        first = await post(client, merchant, "order-1-attempt")
        assert first.status_code == 201
        assert "idempotency-replayed" not in first.headers
        again = await post(client, merchant, "order-1-attempt")
        assert again.status_code == 201
        assert again.headers["idempotency-replayed"] == "true"
        assert again.content == first.content
        assert await count_sessions(db) == 1
        ttl = max([await redis.ttl(k) for k in await redis.keys("pago:idem:*")])
        assert 86_000 < ttl <= 86_400

    async def test_key_order_and_whitespace_do_not_matter(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        body = crypto_body()
        first = await post(client, merchant, "k1", body)
        reordered = json.dumps(dict(reversed(list(body.items()))), indent=4)
        headers = {**merchant.headers(idempotency_key="k1"), "content-type": "application/json"}
        again = await client.post(URL, content=reordered, headers=headers)
        assert again.headers["idempotency-replayed"] == "true"
        assert again.json() == first.json()

    async def test_a_different_body_is_a_conflict(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        await post(client, merchant, "k2")
        response = await post(client, merchant, "k2", crypto_body(pricing_amount="11"))
        assert_error(response, 409, "idempotency_conflict", error_type="idempotency_error")
        assert await count_sessions(db) == 1

    async def test_a_different_path_is_a_conflict(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        session_id = (await post(client, merchant, "k3")).json()["id"]
        response = await client.post(
            f"{URL}/{session_id}/expire", headers=merchant.headers(idempotency_key="k3")
        )
        assert_error(response, 409, "idempotency_conflict")

    async def test_expire_is_idempotent_too(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        session_id = (await post(client, merchant, "k4")).json()["id"]
        path = f"{URL}/{session_id}/expire"
        first = await client.post(path, headers=merchant.headers(idempotency_key="exp"))
        again = await client.post(path, headers=merchant.headers(idempotency_key="exp"))
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.headers["idempotency-replayed"] == "true"
        other = await client.post(path, headers=merchant.headers(idempotency_key="exp-2"))
        assert_error(other, 409, "session_not_pending")

    async def test_an_error_is_not_stored_so_a_corrected_retry_runs(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        bad = await post(client, merchant, "k5", crypto_body(pricing_amount="0.5"))
        assert_error(bad, 400, "amount_too_small")
        good = await post(client, merchant, "k5", crypto_body(pricing_amount="5"))
        assert good.status_code == 201
        assert "idempotency-replayed" not in good.headers

    async def test_gets_ignore_the_header(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await client.get(URL, headers=merchant.headers(idempotency_key="x" * 300))
        assert response.status_code == 200


class TestScope:
    async def test_merchants_sub_merchants_and_modes_do_not_share_keys(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        other_merchant: Merchant,
        db: AsyncEngine,
    ) -> None:
        responses = [
            await post(client, merchant, "shared"),
            await post(client, merchant, "shared", sub="shop-a"),
            await post(client, merchant, "shared", sub="shop-b"),
            await post(client, merchant, "shared", mode=Mode.LIVE),
            await post(client, other_merchant, "shared"),
        ]
        assert [r.status_code for r in responses] == [201] * 5
        assert not any("idempotency-replayed" in r.headers for r in responses)
        assert len({r.json()["id"] for r in responses}) == 5
        assert await count_sessions(db) == 5


class TestKeyFormat:
    async def test_255_characters_is_the_limit(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        assert (await post(client, merchant, "k" * 255)).status_code == 201
        response = await post(client, merchant, "k" * 256)
        assert_error(response, 400, "parameter_invalid", param="Idempotency-Key")

    async def test_empty_key_is_400(self, client: httpx.AsyncClient, merchant: Merchant) -> None:
        assert_error(
            await post(client, merchant, ""), 400, "parameter_invalid", param="Idempotency-Key"
        )

    async def test_authentication_comes_first(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await client.post(
            URL, json=crypto_body(), headers={"Idempotency-Key": "k" * 300}
        )
        assert_error(response, 401, "authentication_failed")


class TestConcurrency:
    async def test_a_running_request_answers_request_in_progress(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        # Hold the sessions table so the first request stops inside its transaction.
        async with db.connect() as blocker:
            await blocker.execute(text("LOCK TABLE checkout_sessions IN ACCESS EXCLUSIVE MODE"))
            first = asyncio.create_task(post(client, merchant, "slow"))
            for _ in range(200):
                if await redis.keys("pago:idem:*"):
                    break
                await asyncio.sleep(0.01)
            second = await post(client, merchant, "slow")
            assert_error(second, 409, "request_in_progress", error_type="idempotency_error")
            assert int(second.headers["retry-after"]) >= 1
            conflicting = await post(client, merchant, "slow", crypto_body(pricing_amount="99"))
            assert_error(conflicting, 409, "idempotency_conflict")
            await blocker.rollback()
        assert (await first).status_code == 201
        replay = await post(client, merchant, "slow")
        assert replay.headers["idempotency-replayed"] == "true"
        assert replay.json() == (await first).json()

    async def test_a_burst_of_retries_creates_one_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        responses = await asyncio.gather(*(post(client, merchant, "burst") for _ in range(12)))
        created = [r for r in responses if r.status_code == 201]
        assert created
        assert len({r.json()["id"] for r in created}) == 1
        for r in responses:
            assert r.status_code in (201, 409), r.text
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "request_in_progress"
        assert await count_sessions(db) == 1


class TestCrashedLock:
    async def test_a_crashed_requests_lock_lapses(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        short = settings.model_copy(update={"idempotency_lock_seconds": 0.3})
        body = crypto_body()
        # What a process that died mid-request leaves behind: the lock, and nothing else.
        principal = Principal(
            key_id=merchant.key_ids[Mode.TEST],
            mode=Mode.TEST,
            merchant=MerchantProfile(merchant.id, merchant.name, None, 30),
        )
        store = IdempotencyStore(redis, ttl_seconds=86_400, lock_seconds=0.3)
        raw = json.dumps(body).encode()
        await store.begin(record_key(principal, "crash"), fingerprint("POST", URL, raw))
        async with running_app(short) as (_, client):
            headers = {
                **merchant.headers(idempotency_key="crash"),
                "content-type": "application/json",
            }
            blocked = await client.post(URL, content=raw, headers=headers)
            assert_error(blocked, 409, "request_in_progress")
            await asyncio.sleep(0.4)
            after = await client.post(URL, content=raw, headers=headers)
            assert after.status_code == 201, after.text

    async def test_a_long_request_keeps_its_lock(
        self, settings: ApiSettings, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        short = settings.model_copy(update={"idempotency_lock_seconds": 0.3})
        async with running_app(short) as (_, client):
            async with db.connect() as blocker:
                await blocker.execute(text("LOCK TABLE checkout_sessions IN ACCESS EXCLUSIVE MODE"))
                first = asyncio.create_task(post(client, merchant, "long"))
                await asyncio.sleep(1.0)  # three lock lifetimes
                assert_error(await post(client, merchant, "long"), 409, "request_in_progress")
                await blocker.rollback()
            assert (await first).status_code == 201
        assert await count_sessions(db) == 1


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_other_methods_are_405_not_idempotency_errors(
    client: httpx.AsyncClient, merchant: Merchant, method: str
) -> None:
    response = await client.request(method, URL, headers=merchant.headers(idempotency_key="m"))
    assert_error(response, 405, "method_not_allowed")


async def records(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(
                        idempotency_records.c.key,
                        idempotency_records.c.sub_merchant_id,
                        idempotency_records.c.status_code,
                        idempotency_records.c.expires_at,
                        idempotency_records.c.created_at,
                    )
                )
            ).all()
        )


async def wait_for_a_lock_wait(db: AsyncEngine, waiting: int = 1) -> None:
    """Until ``waiting`` backends wait on a lock (a request stopped inside its transaction)."""
    deadline = asyncio.get_running_loop().time() + 30
    query = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    while True:
        async with db.connect() as conn:
            if int((await conn.execute(query)).scalar_one()) >= waiting:
                return
        assert asyncio.get_running_loop().time() < deadline, "no request waited on a lock"
        await asyncio.sleep(0.02)


class TestDurable:
    """Redis loses the key (restart, failover, eviction): Postgres still answers the retry."""

    async def test_a_retry_after_redis_lost_the_key_replays_the_same_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        first = await post(client, merchant, "durable-1")
        assert first.status_code == 201
        await redis.flushdb()
        again = await post(client, merchant, "durable-1")
        assert again.status_code == 201, again.text
        assert again.headers["idempotency-replayed"] == "true"
        assert again.content == first.content
        assert await count_sessions(db) == 1
        # The replay put the record back in Redis: the next retry takes the fast path.
        assert await redis.keys("pago:idem:*")

    async def test_a_different_body_after_redis_lost_the_key_is_a_conflict(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        await post(client, merchant, "durable-2")
        await redis.flushdb()
        response = await post(client, merchant, "durable-2", crypto_body(pricing_amount="11"))
        assert_error(response, 409, "idempotency_conflict", error_type="idempotency_error")
        assert await count_sessions(db) == 1
        # The conflict released the lock it took: the right body still replays.
        again = await post(client, merchant, "durable-2")
        assert again.headers["idempotency-replayed"] == "true"

    async def test_concurrent_retries_after_a_flush_create_no_second_session(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        first = await post(client, merchant, "durable-3")
        await redis.flushdb()
        responses = await asyncio.gather(*(post(client, merchant, "durable-3") for _ in range(10)))
        for r in responses:
            assert r.status_code in (201, 409), r.text
            if r.status_code == 201:
                assert r.headers["idempotency-replayed"] == "true"
                assert r.json()["id"] == first.json()["id"]
            else:
                assert r.json()["error"]["code"] == "request_in_progress"
        assert await count_sessions(db) == 1

    async def test_a_duplicate_past_a_lost_lock_answers_the_first_response(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        # The first request stops inside its transaction (after its claim); Redis then loses
        # its lock, so a retry passes Redis and runs: it must wait on the claim and answer the
        # first request's response, not open a second session.
        async with db.connect() as blocker:
            await blocker.execute(text("LOCK TABLE checkout_sessions IN ACCESS EXCLUSIVE MODE"))
            first = asyncio.create_task(post(client, merchant, "durable-4"))
            await wait_for_a_lock_wait(db)
            await redis.flushdb()
            second = asyncio.create_task(post(client, merchant, "durable-4"))
            await wait_for_a_lock_wait(db, 2)
            await blocker.rollback()
        a, b = await first, await second
        assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
        assert a.json()["id"] == b.json()["id"]
        assert [r.headers.get("idempotency-replayed") for r in (a, b)].count("true") == 1
        assert await count_sessions(db) == 1

    async def test_expire_replays_after_redis_lost_the_key(
        self, client: httpx.AsyncClient, merchant: Merchant, redis: Redis
    ) -> None:
        session_id = (await post(client, merchant, "durable-exp-create")).json()["id"]
        path = f"{URL}/{session_id}/expire"
        first = await client.post(path, headers=merchant.headers(idempotency_key="durable-exp"))
        assert first.status_code == 200
        await redis.flushdb()
        again = await client.post(path, headers=merchant.headers(idempotency_key="durable-exp"))
        assert again.status_code == 200, again.text  # not 409 session_not_pending
        assert again.headers["idempotency-replayed"] == "true"
        assert again.content == first.content

    async def test_the_record_commits_with_the_session_and_only_then(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        bad = await post(client, merchant, "durable-5", crypto_body(pricing_amount="0.5"))
        assert_error(bad, 400, "amount_too_small")
        assert await records(db) == []
        await post(client, merchant, "durable-5")
        await post(client, merchant, "durable-5", sub="shop-a")
        rows = await records(db)
        assert sorted((r.key, r.sub_merchant_id, r.status_code) for r in rows) == [
            ("durable-5", "", 201),
            ("durable-5", merchant.sub_merchants["shop-a"], 201),
        ]
        for row in rows:
            assert row.expires_at - row.created_at == timedelta(hours=24)

    async def test_expired_records_neither_replay_nor_stay(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        db: AsyncEngine,
        redis: Redis,
        settings: ApiSettings,
    ) -> None:
        first = await post(client, merchant, "durable-6")
        await redis.flushdb()
        async with db.begin() as conn:
            await conn.execute(
                update(idempotency_records).values(
                    expires_at=func.now() - timedelta(seconds=1),
                    created_at=func.now() - timedelta(hours=24, seconds=1),
                )
            )
        again = await post(client, merchant, "durable-6", crypto_body(client_reference_id="o-6"))
        assert again.status_code == 201, again.text
        assert "idempotency-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        await redis.flushdb()
        async with db.begin() as conn:
            await conn.execute(
                update(idempotency_records).values(expires_at=func.now() - timedelta(seconds=1))
            )
        store = DurableStore(db, ttl_seconds=settings.idempotency_ttl_seconds)
        assert await store.purge() == 1
        assert await records(db) == []
