"""Rate limiting in Redis: GCRA (a steady rate plus a burst), one key per bucket.

GCRA keeps one timestamp per bucket (the "theoretical arrival time"), so a check is one
script call and the bucket's memory is one small string that expires when idle. The clock is
Redis's own (``TIME``), so api replicas with skewed clocks share one limit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pago.api.errors import RateLimited

log = logging.getLogger(__name__)

# Times are microseconds: a Lua number is a double, exact to 2^53 µs (285 years past 1970).
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return math.ceil(allow_at - now)
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    per_second: float
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, round(1_000_000 / self.per_second))


class RateLimiter:
    """``hit(bucket, limit)`` raises ``RateLimited`` (with ``Retry-After``) over the limit.

    Redis being down fails open (the request proceeds, a warning is logged at most every
    10 s): the limiter protects capacity, and refusing every request would spend it worse.
    """

    def __init__(self, redis: Redis, *, prefix: str = "pago:rl:") -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)
        self._prefix = prefix
        self._last_warning = 0.0

    async def hit(self, bucket: str, limit: Limit) -> None:
        interval = limit.interval_us
        try:
            wait_us = int(
                await self._script(
                    keys=[self._prefix + bucket], args=[interval, interval * limit.burst]
                )
            )
        except RedisError:
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("rate limiter unavailable (Redis); letting requests through")
            return
        if wait_us > 0:
            raise RateLimited(
                "Too many requests; slow down and retry after the Retry-After interval.",
                retry_after=max(1, math.ceil(wait_us / 1_000_000)),
            )
