"""The card providers' circuit breaker, shared by every api replica through Redis.

Per provider, Redis keeps (all under ``<prefix><provider>``):

- ``…:calls``: the last ``sample_size`` create calls, newest first, each
  ``"<time µs>:<1 ok | 0 unavailable>:<latency ms>"``;
- ``…:state``: a hash ``{open: "0"|"1", opened_at: µs, closed_at: µs, consecutive: n}``;
- ``…:probe``: while half-open, the one replica allowed to probe holds this key (``SET NX``
  with an expiry, so a replica that dies mid-probe does not block the provider for ever).

The breaker opens after ``failure_threshold`` consecutive unavailable calls, or when at least
``min_calls`` calls in the last ``window_seconds`` failed at ``error_rate`` or more. It is
half-open once ``cooldown_seconds`` passed since it opened: ``acquire`` then lets exactly one
caller across the replicas probe. A successful call resets the consecutive count; a successful
probe closes the breaker, and the error rate then counts only calls after the close (the
failures that opened it were judged already). An unavailable call while half-open opens it
again for another cool-down; a late success while it is still cooling down changes nothing.

Every decision is one Lua script on Redis's clock (``TIME``), so replicas with skewed clocks
agree and two replicas cannot both win the probe. Redis being down fails open, as the rate
limiter does (``pago.api.ratelimit``): routing then sees every provider closed with no
history, and a warning is logged at most every 10 s; a provider's own failures still fail over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pago.api.cards.routing.model import BreakerState, Health
from pago.common.enums import CardProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    """Consecutive unavailable calls that open the breaker."""
    error_rate: Decimal = Decimal("0.5")
    """Share of unavailable calls in the window that opens it (with ``min_calls``)."""
    min_calls: int = 10
    """Calls in the window before the error rate counts (3 errors in 4 calls is noise)."""
    window_seconds: int = 60
    """The recent window of ``Health`` (calls, errors, median latency) and of the error rate."""
    cooldown_seconds: int = 30
    """Open → half-open after this long."""
    probe_seconds: int = 20
    """How long one replica holds the half-open probe (more than one create's timeout)."""
    sample_size: int = 100
    """Calls kept per provider."""


# KEYS: calls, state, probe. ARGV: ok (1/0), latency ms, failure threshold, error rate,
# min calls, window µs, cooldown µs, sample size. Returns the state after the call.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ok = ARGV[1] == '1'
local cooldown = tonumber(ARGV[7])
redis.call('LPUSH', KEYS[1], string.format('%.0f', now) .. ':' .. ARGV[1] .. ':' .. ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[8]) - 1)
local is_open = redis.call('HGET', KEYS[2], 'open') == '1'
local opened_at = tonumber(redis.call('HGET', KEYS[2], 'opened_at') or '0')
local half_open = is_open and now - opened_at >= cooldown
if ok then
  if half_open then
    local at = string.format('%.0f', now)
    redis.call('HSET', KEYS[2], 'open', '0', 'consecutive', '0', 'closed_at', at)
    redis.call('DEL', KEYS[3])
    return 'closed'
  end
  if not is_open then
    redis.call('HSET', KEYS[2], 'consecutive', '0')
    return 'closed'
  end
  return 'open'
end
local consecutive = redis.call('HINCRBY', KEYS[2], 'consecutive', 1)
if half_open then
  redis.call('HSET', KEYS[2], 'open', '1', 'opened_at', string.format('%.0f', now))
  redis.call('DEL', KEYS[3])
  return 'open'
end
if is_open then return 'open' end
local trip = consecutive >= tonumber(ARGV[3])
if not trip then
  -- Calls before the breaker last closed were judged already: a fresh start after a probe.
  local closed_at = tonumber(redis.call('HGET', KEYS[2], 'closed_at') or '0')
  local since = math.max(now - tonumber(ARGV[6]), closed_at)
  local calls, errors = 0, 0
  for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local at, good = string.match(entry, '^(%d+):(%d)')
    if tonumber(at) < since then break end
    calls = calls + 1
    if good == '0' then errors = errors + 1 end
  end
  trip = calls >= tonumber(ARGV[5]) and errors >= tonumber(ARGV[4]) * calls
end
if trip then
  redis.call('HSET', KEYS[2], 'open', '1', 'opened_at', string.format('%.0f', now))
  return 'open'
end
return 'closed'
"""

# KEYS: state, probe. ARGV: cooldown µs, probe ms. 1 when the caller may call the provider.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return 1 end
local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
if now - opened_at < tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[2])) then return 1 end
return 0
"""

# KEYS: per provider, its calls then its state key. Returns Redis's now (µs) and, per provider,
# {open flag, opened_at, calls…}.
_READ = """
local t = redis.call('TIME')
local out = {string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))}
for i = 1, #KEYS, 2 do
  local state = redis.call('HMGET', KEYS[i + 1], 'open', 'opened_at')
  table.insert(out, {state[1] or '0', state[2] or '0', redis.call('LRANGE', KEYS[i], 0, -1)})
end
return out
"""


class CircuitBreaker:
    """``health`` for the scorer, ``acquire`` before a create call, ``record`` after it."""

    def __init__(
        self, redis: Redis, config: BreakerConfig, *, prefix: str = "pago:card:breaker:"
    ) -> None:
        self._config = config
        self._prefix = prefix
        self._record = redis.register_script(_RECORD)
        self._acquire = redis.register_script(_ACQUIRE)
        self._read = redis.register_script(_READ)
        self._last_warning = 0.0

    def _keys(self, provider: CardProvider) -> tuple[str, str, str]:
        base = self._prefix + provider.value
        return base + ":calls", base + ":state", base + ":probe"

    async def record(self, provider: CardProvider, *, ok: bool, latency_ms: int) -> BreakerState:
        """Record one create call: ``ok=False`` for ``ProviderUnavailable`` only (a timeout,
        a 5xx, a 429), never for a ``ProviderRejected`` the request caused. Returns the
        breaker's stored state after it (``CLOSED`` if Redis is down)."""
        c = self._config
        try:
            state = await self._record(
                keys=list(self._keys(provider)),
                args=[
                    1 if ok else 0,
                    max(0, latency_ms),
                    c.failure_threshold,
                    str(c.error_rate),
                    c.min_calls,
                    c.window_seconds * 1_000_000,
                    c.cooldown_seconds * 1_000_000,
                    c.sample_size,
                ],
            )
        except RedisError:
            self._warn()
            return BreakerState.CLOSED
        return BreakerState(state.decode() if isinstance(state, bytes) else state)

    async def acquire(self, provider: CardProvider) -> bool:
        """May this caller call ``provider`` now? Closed: yes; open and cooling down: no;
        half-open: yes for exactly one caller across the replicas until its ``record`` (or
        until ``probe_seconds`` pass)."""
        _, state, probe = self._keys(provider)
        c = self._config
        try:
            allowed = await self._acquire(
                keys=[state, probe], args=[c.cooldown_seconds * 1_000_000, c.probe_seconds * 1000]
            )
        except RedisError:
            self._warn()
            return True
        return int(allowed) == 1

    async def health(self, providers: Sequence[CardProvider]) -> Mapping[CardProvider, Health]:
        """Every provider's recent health in one round trip."""
        if not providers:
            return {}
        keys: list[str] = []
        for provider in providers:
            calls_key, state_key, _ = self._keys(provider)
            keys += [calls_key, state_key]
        try:
            reply = await self._read(keys=keys, args=[])
        except RedisError:
            self._warn()
            return {p: Health(BreakerState.CLOSED, 0, 0, None) for p in providers}
        now = int(reply[0])
        since = now - self._config.window_seconds * 1_000_000
        cooldown = self._config.cooldown_seconds * 1_000_000
        result: dict[CardProvider, Health] = {}
        for provider, (is_open, opened_at, entries) in zip(providers, reply[1:], strict=True):
            if int(is_open) != 1:
                breaker = BreakerState.CLOSED
            elif now - int(opened_at) >= cooldown:
                breaker = BreakerState.HALF_OPEN
            else:
                breaker = BreakerState.OPEN
            calls, errors = 0, 0
            latencies: list[int] = []
            for entry in entries:
                at, good, latency = bytes(entry).decode().split(":")
                if int(at) < since:
                    break  # newest first: the rest are older still
                calls += 1
                if good == "1":
                    latencies.append(int(latency))
                else:
                    errors += 1
            result[provider] = Health(breaker, calls, errors, _median(latencies))
        return result

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("card circuit breaker unavailable (Redis); treating providers as closed")


def _median(values: list[int]) -> int | None:
    """The lower median (an observed latency, an int), ``None`` for none."""
    if not values:
        return None
    return sorted(values)[(len(values) - 1) // 2]
