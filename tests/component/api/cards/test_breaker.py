"""The card circuit breaker against the real Redis: shared state, one probe across replicas."""

from __future__ import annotations

import asyncio
import socket

from redis.asyncio import Redis

from pago.api.cards.routing.health import BreakerConfig, CircuitBreaker
from pago.api.cards.routing.model import BreakerState, Health
from pago.common.enums import CardProvider
from pago.common.redis import create_redis
from pago.devstack.redis_server import RedisServer

STRIPE, ADYEN = CardProvider.STRIPE, CardProvider.ADYEN
COOLING = BreakerConfig(failure_threshold=3, min_calls=4, cooldown_seconds=3600)
"""An open breaker stays open for the whole test."""
COOLED = BreakerConfig(failure_threshold=3, min_calls=4, cooldown_seconds=0)
"""An open breaker is half-open at once."""


async def fail(breaker: CircuitBreaker, provider: CardProvider, times: int) -> BreakerState:
    state = BreakerState.CLOSED
    for _ in range(times):
        state = await breaker.record(provider, ok=False, latency_ms=5000)
    return state


class TestHealth:
    async def test_a_provider_nobody_called_is_closed_without_history(self, redis: Redis) -> None:
        health = await CircuitBreaker(redis, COOLING).health([STRIPE, ADYEN])
        assert health == {p: Health(BreakerState.CLOSED, 0, 0, None) for p in (STRIPE, ADYEN)}

    async def test_calls_errors_and_the_median_latency_of_successes(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLING)
        for latency in (300, 100, 200, 900):
            await breaker.record(STRIPE, ok=True, latency_ms=latency)
        await breaker.record(STRIPE, ok=False, latency_ms=10_000)
        health = await breaker.health([STRIPE, ADYEN])
        assert health[STRIPE] == Health(BreakerState.CLOSED, 5, 1, 200)
        assert health[ADYEN].recent_calls == 0

    async def test_calls_older_than_the_window_are_not_recent(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLING)
        await breaker.record(STRIPE, ok=True, latency_ms=100)
        # A call from 2 minutes before the first (the window is 60 s), appended as the oldest.
        (newest,) = await redis.lrange("pago:card:breaker:stripe:calls", 0, 0)
        assert isinstance(newest, bytes)
        old_at = int(newest.decode().split(":")[0]) - 120_000_000
        await redis.rpush("pago:card:breaker:stripe:calls", f"{old_at}:0:5000")
        assert (await breaker.health([STRIPE]))[STRIPE] == Health(BreakerState.CLOSED, 1, 0, 100)


class TestOpening:
    async def test_opens_after_consecutive_failures(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLING)
        assert await fail(breaker, STRIPE, 2) is BreakerState.CLOSED
        assert await fail(breaker, STRIPE, 1) is BreakerState.OPEN
        assert (await breaker.health([STRIPE]))[STRIPE].breaker is BreakerState.OPEN
        assert not await breaker.acquire(STRIPE)
        assert await breaker.acquire(ADYEN)  # per provider

    async def test_a_success_resets_the_consecutive_count(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, BreakerConfig(failure_threshold=3, min_calls=100))
        await fail(breaker, STRIPE, 2)
        await breaker.record(STRIPE, ok=True, latency_ms=100)
        assert await fail(breaker, STRIPE, 2) is BreakerState.CLOSED

    async def test_opens_on_the_error_rate_over_the_window(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, BreakerConfig(failure_threshold=5, min_calls=4))
        for ok in (True, False, True):
            assert await breaker.record(STRIPE, ok=ok, latency_ms=100) is BreakerState.CLOSED
        # 2 of 4 calls failed: 50 %, never two in a row.
        assert await breaker.record(STRIPE, ok=False, latency_ms=100) is BreakerState.OPEN

    async def test_another_replica_sees_the_open_breaker(
        self, redis: Redis, redis_server: RedisServer
    ) -> None:
        await fail(CircuitBreaker(redis, COOLING), STRIPE, 3)
        other = create_redis(redis_server.url)
        try:
            replica = CircuitBreaker(other, COOLING)
            assert (await replica.health([STRIPE]))[STRIPE].breaker is BreakerState.OPEN
            assert not await replica.acquire(STRIPE)
        finally:
            await other.aclose()


class TestHalfOpen:
    async def test_after_the_cool_down_exactly_one_replica_probes(
        self, redis: Redis, redis_server: RedisServer
    ) -> None:
        await fail(CircuitBreaker(redis, COOLED), STRIPE, 3)
        clients = [create_redis(redis_server.url) for _ in range(4)]
        try:
            replicas = [CircuitBreaker(c, COOLED) for c in clients]
            assert (await replicas[0].health([STRIPE]))[STRIPE].breaker is BreakerState.HALF_OPEN
            granted = await asyncio.gather(*(r.acquire(STRIPE) for r in replicas for _ in range(5)))
            assert granted.count(True) == 1
        finally:
            for c in clients:
                await c.aclose()

    async def test_a_successful_probe_closes_it(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLED)
        await fail(breaker, STRIPE, 3)
        assert await breaker.acquire(STRIPE)
        assert await breaker.record(STRIPE, ok=True, latency_ms=100) is BreakerState.CLOSED
        assert (await breaker.health([STRIPE]))[STRIPE].breaker is BreakerState.CLOSED
        assert all(await asyncio.gather(*(breaker.acquire(STRIPE) for _ in range(3))))
        # and the consecutive count starts again from zero
        assert await fail(breaker, STRIPE, 2) is BreakerState.CLOSED

    async def test_a_failed_probe_opens_it_for_another_cool_down(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLED)
        await fail(breaker, STRIPE, 3)
        assert await breaker.acquire(STRIPE)
        assert await breaker.record(STRIPE, ok=False, latency_ms=5000) is BreakerState.OPEN
        # Read with an hour's cool-down: opened again just now, so open, not half-open.
        cooling = CircuitBreaker(redis, COOLING)
        assert (await cooling.health([STRIPE]))[STRIPE].breaker is BreakerState.OPEN
        assert not await cooling.acquire(STRIPE)

    async def test_a_late_success_does_not_close_a_cooling_breaker(self, redis: Redis) -> None:
        breaker = CircuitBreaker(redis, COOLING)
        await fail(breaker, STRIPE, 3)
        assert await breaker.record(STRIPE, ok=True, latency_ms=100) is BreakerState.OPEN


class TestRedisDown:
    async def test_fails_open(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        down = create_redis(f"redis://127.0.0.1:{port}/0")
        try:
            breaker = CircuitBreaker(down, COOLING)
            assert await breaker.health([STRIPE]) == {
                STRIPE: Health(BreakerState.CLOSED, 0, 0, None)
            }
            assert await breaker.acquire(STRIPE)
            assert await breaker.record(STRIPE, ok=False, latency_ms=1) is BreakerState.CLOSED
        finally:
            await down.aclose()
