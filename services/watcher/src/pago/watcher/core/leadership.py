"""Leadership: two replicas of one watcher never both scan.

``RedisLease`` is a lease with a fencing token. Acquiring it increments a per-watcher counter
(the *fence*) and stores ``<instance>:<fence>`` under the lease key with a TTL; the holder
renews it every ``renew_interval`` with a compare-and-expire, and releases it with a
compare-and-delete on a graceful stop. A standby retries acquiring every ``retry_interval``,
so after a leader dies the standby holds the lease within ``ttl + retry_interval`` (10 s +
2 s by default; the contract is 30 s).

A leader that cannot renew stops scanning before its lease can have expired in Redis: it
trusts the lease only until ``renewed_at + ttl × SAFETY`` on its own monotonic clock, because
a renewal sent at ``t`` keeps the key alive until ``t + ttl`` at the latest. The fence goes
into every cursor record (``core.cursor``), so a paused ex-leader's late write never wins.

``SoloLease`` is for a deployment that runs one replica on purpose (``leadership=none``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SAFETY = 0.8
"""Share of the TTL a leader trusts after a successful renewal (clock drift, slow replies)."""

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(Protocol):
    @property
    def fence(self) -> int:
        """The current term's fencing token (valid after a successful ``acquire``)."""
        ...

    async def acquire(self) -> bool:
        """Try once to become the leader."""
        ...

    async def renew(self) -> bool:
        """Extend the lease; False when it is certainly lost (another holder, or expired)."""
        ...

    def valid(self) -> bool:
        """Whether this replica may still act as the leader (by its own clock)."""
        ...

    async def release(self) -> None: ...


class RedisLease:
    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        ttl: float = 10.0,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = f"pago:watcher:lease:{name}"
        self._fence_key = f"pago:watcher:fence:{name}"
        self._ttl_ms = int(ttl * 1000)
        self._ttl = ttl
        self.instance = instance or uuid.uuid4().hex[:12]
        self._clock = clock
        self._fence = 0
        self._token: str | None = None
        self._valid_until = 0.0

    @property
    def fence(self) -> int:
        return self._fence

    async def acquire(self) -> bool:
        sent = self._clock()
        try:
            fence = int(
                await self._redis.eval(
                    _ACQUIRE, 2, self._key, self._fence_key, self.instance, self._ttl_ms
                )
            )
        except (RedisError, OSError) as exc:
            log.warning("lease acquire failed", extra={"error": str(exc)})
            return False
        if fence == 0:
            return False
        self._fence = fence
        self._token = f"{self.instance}:{fence}"
        self._valid_until = sent + self._ttl * SAFETY
        return True

    async def renew(self) -> bool:
        if self._token is None:
            return False
        sent = self._clock()
        try:
            ok = int(await self._redis.eval(_RENEW, 1, self._key, self._token, self._ttl_ms))
        except (RedisError, OSError) as exc:
            # Unknown outcome: keep the lease only as long as the last renewal covers.
            log.warning("lease renew failed", extra={"error": str(exc)})
            return self.valid()
        if not ok:
            self._token = None
            self._valid_until = 0.0
            return False
        self._valid_until = sent + self._ttl * SAFETY
        return True

    def valid(self) -> bool:
        return self._token is not None and self._clock() < self._valid_until

    async def release(self) -> None:
        token, self._token, self._valid_until = self._token, None, 0.0
        if token is None:
            return
        try:
            await self._redis.eval(_RELEASE, 1, self._key, token)
        except (RedisError, OSError) as exc:
            log.warning("lease release failed; it expires by itself", extra={"error": str(exc)})


class SoloLease:
    """Always the leader: for a single replica by design (no Redis involved)."""

    def __init__(self) -> None:
        self._held = False

    @property
    def fence(self) -> int:
        return 0

    async def acquire(self) -> bool:
        self._held = True
        return True

    async def renew(self) -> bool:
        return self._held

    def valid(self) -> bool:
        return self._held

    async def release(self) -> None:
        self._held = False
