"""When to try a webhook delivery again (pure: values in, a decision out).

The schedule is IronixPay's, stretched: attempt 1 at once, then about 15 s, 1 min, 5 min,
30 min, 2 h, 6 h, 12 h, 24 h and 3 days after the previous attempt — ten attempts over about
four and a half days, long enough to outlast a merchant's weekend outage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_DELAYS: tuple[int, ...] = (15, 60, 300, 1800, 7200, 21600, 43200, 86400, 259200)
"""Seconds before attempt 2, 3, …, 10 (each counted from the attempt before it)."""
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
MAX_RETRY_AFTER = 86_400.0
"""A receiver's ``Retry-After`` is honoured up to one day; beyond that the schedule resumes."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    unit: float = 1.0
    """Real seconds per schedule second (tests shrink it; production keeps 1)."""
    jitter: float = 0.1
    """Relative spread of each delay, so retries of one outage do not arrive in lockstep."""
    rng: random.Random | None = None

    def next_delay(self, attempts: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after ``attempts`` attempts failed; ``None`` when
        the schedule is exhausted. ``retry_after`` (a receiver's 429/503 ``Retry-After``, in
        real seconds) is a floor: the retry never comes sooner than the receiver asked."""
        if attempts < 1:
            return 0.0
        if attempts >= MAX_ATTEMPTS:
            return None
        rng = self.rng or _RNG
        spread = 1.0 + rng.uniform(-self.jitter, self.jitter)
        delay = RETRY_DELAYS[attempts - 1] * self.unit * spread
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay


_RNG = random.Random()  # noqa: S311 - spreading load, not secrecy


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Anything unparseable is ignored (``None``) rather than trusted.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
