"""The retry schedule and ``Retry-After``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pago.notifier.schedule import (
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    RETRY_DELAYS,
    RetryPolicy,
    parse_retry_after,
)

EXACT = RetryPolicy(jitter=0.0)


class TestSchedule:
    def test_is_immediately_then_15s_1m_5m_30m_2h_6h_12h_24h_3d(self) -> None:
        delays = [EXACT.next_delay(n) for n in range(1, MAX_ATTEMPTS)]
        assert delays == [15, 60, 300, 1800, 7200, 21600, 43200, 86400, 259200]
        assert EXACT.next_delay(0) == 0.0
        assert MAX_ATTEMPTS == 10

    def test_ends_after_the_tenth_attempt(self) -> None:
        assert EXACT.next_delay(MAX_ATTEMPTS) is None

    def test_the_unit_shrinks_it_for_tests(self) -> None:
        assert RetryPolicy(unit=0.01, jitter=0.0).next_delay(1) == pytest.approx(0.15)

    @given(attempts=st.integers(1, MAX_ATTEMPTS - 1), seed=st.integers(0, 2**32))
    def test_jitter_stays_within_its_spread(self, attempts: int, seed: int) -> None:
        delay = RetryPolicy(jitter=0.1, rng=random.Random(seed)).next_delay(attempts)
        base = RETRY_DELAYS[attempts - 1]
        assert delay is not None
        assert base * 0.9 <= delay <= base * 1.1


class TestRetryAfter:
    def test_is_a_floor_under_the_schedule(self) -> None:
        assert EXACT.next_delay(1, retry_after=120) == 120
        assert EXACT.next_delay(3, retry_after=2) == 300

    def test_is_not_scaled_by_the_unit(self) -> None:
        assert RetryPolicy(unit=0.01, jitter=0.0).next_delay(1, retry_after=2) == 2

    def test_is_capped_at_a_day(self) -> None:
        assert EXACT.next_delay(1, retry_after=10**9) == MAX_RETRY_AFTER

    def test_does_not_extend_an_exhausted_schedule(self) -> None:
        assert EXACT.next_delay(MAX_ATTEMPTS, retry_after=5) is None

    @pytest.mark.parametrize(
        ("header", "seconds"),
        [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), (None, None), ("soon", None), ("-5", None)],
    )
    def test_delta_seconds(self, header: str | None, seconds: float | None) -> None:
        assert parse_retry_after(header) == seconds

    def test_http_date(self) -> None:
        now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
        header = format_datetime(now + timedelta(seconds=90), usegmt=True)
        assert parse_retry_after(header, now) == 90.0
        past = format_datetime(now - timedelta(hours=1), usegmt=True)
        assert parse_retry_after(past, now) == 0.0
