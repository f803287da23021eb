"""Routing statistics on the real Postgres: exact counts per route and hour, a recent window."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.cards import stats_repository as stats
from pago.api.cards.routing.model import RouteStats
from pago.common.db.schema import card_route_stats
from pago.common.enums import CardProvider, CardSessionStatus

STRIPE, ADYEN = CardProvider.STRIPE, CardProvider.ADYEN


class TestRecord:
    async def test_attempts_and_outcomes_count_per_route(self, db: AsyncEngine) -> None:
        async with db.begin() as conn:
            for _ in range(3):
                await stats.record_attempt(conn, STRIPE, "AUD", "AU")
            await stats.record_attempt(conn, ADYEN, "aud", "au")
            await stats.record_attempt(conn, STRIPE, "AUD", "NZ")
            await stats.record_outcome(conn, STRIPE, "AUD", "AU", CardSessionStatus.COMPLETED)
            await stats.record_outcome(conn, STRIPE, "AUD", "AU", CardSessionStatus.FAILED)
            await stats.record_outcome(conn, STRIPE, "AUD", "AU", CardSessionStatus.EXPIRED)
            await stats.record_outcome(conn, ADYEN, "AUD", "AU", CardSessionStatus.CANCELLED)
        async with db.connect() as conn:
            assert await stats.read_stats(conn, "AUD", "AU") == {
                STRIPE: RouteStats(attempts=3, completed=1, failed=2),
                ADYEN: RouteStats(attempts=1, completed=0, failed=0),
            }
            assert await stats.read_stats(conn, "AUD", "NZ") == {STRIPE: RouteStats(1, 0, 0)}
            assert await stats.read_stats(conn, "USD", "AU") == {}

    async def test_pending_is_not_an_outcome(self, db: AsyncEngine) -> None:
        async with db.begin() as conn:
            with pytest.raises(ValueError, match="not a terminal outcome"):
                await stats.record_outcome(conn, STRIPE, "AUD", "AU", CardSessionStatus.PENDING)

    async def test_a_rolled_back_state_change_counts_nothing(self, db: AsyncEngine) -> None:
        async with db.connect() as conn:
            await stats.record_attempt(conn, STRIPE, "AUD", "AU")
            await conn.rollback()
            assert await stats.read_stats(conn, "AUD", "AU") == {}

    async def test_concurrent_writers_lose_no_count(self, db: AsyncEngine) -> None:
        async def one() -> None:
            async with db.begin() as conn:
                await stats.record_attempt(conn, STRIPE, "AUD", "AU")
                await stats.record_outcome(conn, STRIPE, "AUD", "AU", CardSessionStatus.COMPLETED)

        await asyncio.gather(*(one() for _ in range(20)))
        async with db.connect() as conn:
            assert await stats.read_stats(conn, "AUD", "AU") == {STRIPE: RouteStats(20, 20, 0)}
            rows = await conn.scalar(select(func.count()).select_from(card_route_stats))
            assert rows == 1  # one row per route and hour


class TestWindow:
    async def test_only_recent_hours_count_and_old_ones_are_pruned(self, db: AsyncEngine) -> None:
        async with db.begin() as conn:
            await stats.record_attempt(conn, STRIPE, "AUD", "AU")
            hour = func.date_trunc("hour", func.now(), "UTC")
            for days, attempts in ((3, 10), (8, 100)):
                await conn.execute(
                    insert(card_route_stats).values(
                        currency="AUD",
                        country="AU",
                        provider="stripe",
                        window_start=hour - timedelta(days=days),
                        attempts=attempts,
                        completed=attempts,
                    )
                )
        async with db.begin() as conn:
            assert await stats.read_stats(conn, "AUD", "AU") == {STRIPE: RouteStats(11, 10, 0)}
            assert await stats.read_stats(conn, "AUD", "AU", window=timedelta(days=1)) == {
                STRIPE: RouteStats(1, 0, 0)
            }
            assert await stats.prune(conn, keep=timedelta(days=7)) == 1
            assert await stats.read_stats(conn, "AUD", "AU", window=timedelta(days=30)) == {
                STRIPE: RouteStats(11, 10, 0)
            }


class TestCache:
    async def test_a_route_is_read_once_per_ttl(self, db: AsyncEngine) -> None:
        now = [100.0]
        cache = stats.RouteStatsCache(5, clock=lambda: now[0])
        async with db.connect() as conn:
            assert await cache.read(conn, "AUD", "AU") == {}
            async with db.begin() as writer:
                await stats.record_attempt(writer, STRIPE, "AUD", "AU")
            assert await cache.read(conn, "AUD", "AU") == {}  # cached
            assert await cache.read(conn, "AUD", "NZ") == {}  # another route: its own entry
            now[0] += 5
            assert await cache.read(conn, "aud", "au") == {STRIPE: RouteStats(1, 0, 0)}
