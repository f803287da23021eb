"""Pool depth (metric, low-water warning) and, in development only, pools that refill.

Each api process checks every ``PAGO_ADDRESS_POOL_CHECK_SECONDS``: the depth of every pool goes
to ``pago_address_pool_addresses{merchant_id, family, mode, state}``; a pool in use (no active
xpub for its family and mode) with fewer available addresses than
``PAGO_ADDRESS_POOL_LOW_WATER`` logs a warning once when it drops there. In development such a
pool, in test mode, is refilled with generated keys (see ``devkeys``); the same refill runs on
the request path when a create finds the pool empty, so ``make dev`` never answers 503 for want
of one. Live-mode pools are never refilled: real money belongs on the merchant's own keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.addresses import devkeys, repository
from pago.api.addresses.repository import PoolDepth
from pago.api.addresses.settings import AddressPoolSettings
from pago.common.enums import ChainFamily, Mode
from pago.common.errors import ConfigError
from pago.common.settings import Environment

log = logging.getLogger(__name__)

POOL_ADDRESSES = Gauge(
    "pago_address_pool_addresses",
    "Pool addresses by state: available (never used, or cooled down), cooling, held (an open "
    "payment exception), leased",
    ["merchant_id", "family", "mode", "state"],
)
POOL_LOW_WATER = Gauge(
    "pago_address_pool_low_water",
    "The low-water mark: alert when available addresses of a pool in use fall below it",
)
POOL_LOW = Gauge(
    "pago_address_pool_below_low_water",
    "1 while a pool in use has fewer available addresses than the low-water mark",
    ["merchant_id", "family", "mode"],
)
POOL_EXHAUSTED = Counter(
    "pago_address_pool_exhausted_total",
    "Creates answered 503 address_pool_exhausted",
    ["family", "mode"],
)
POOL_REFILLED = Counter(
    "pago_address_pool_refilled_total",
    "Addresses generated into a pool (development only)",
    ["family", "mode"],
)


def _now() -> datetime:
    return datetime.now(UTC)


class PoolRefiller:
    """Development only: tops a pool up with generated keys. Refuses to exist elsewhere."""

    def __init__(self, *, env: Environment, batch: int, keys_dir: str | None) -> None:
        if env is not Environment.DEVELOPMENT:
            raise ConfigError("pools refill themselves only in development (watch-only)")
        self._batch = batch
        self._store = devkeys.KeyStore(Path(keys_dir)) if keys_dir else None

    async def refill(
        self, conn: AsyncConnection, merchant_id: str, family: ChainFamily, mode: str
    ) -> int:
        """Add a batch of fresh addresses to an existing test-mode pool in ``conn``'s
        transaction; 0 for a live-mode pool (real money belongs on the merchant's own keys), for
        a family the merchant has no pool of, or while another process refills it. Generating
        costs ~0.1 ms per key."""
        if mode != Mode.TEST.value:
            return 0
        if not await repository.try_lock_pool(conn, merchant_id, family.value, mode):
            return 0
        if not await repository.has_pool(conn, merchant_id, family.value, mode):
            return 0  # a merchant without a pool for this family gets none conjured up
        keys = await asyncio.to_thread(devkeys.generate, family, self._batch)
        if self._store is not None:
            await asyncio.to_thread(self._store.save, merchant_id, family, mode, keys)
        added = await repository.insert_pool(
            conn,
            merchant_id=merchant_id,
            family=family.value,
            mode=mode,
            addresses=[k.address for k in keys],
        )
        POOL_REFILLED.labels(family.value, mode).inc(added)  # counted even if rolled back
        log.info(
            "refilled a development address pool",
            extra={
                "merchant_id": merchant_id,
                "family": family.value,
                "mode": mode,
                "added": added,
            },
        )
        return added

    async def wait_for_refills(
        self, conn: AsyncConnection, merchant_id: str, family: ChainFamily, mode: str
    ) -> None:
        """Wait until no other transaction is refilling this pool (what it added is then
        visible to the next statement); ``refill`` in this transaction then holds the lock."""
        await repository.lock_pool(conn, merchant_id, family.value, mode)


def refiller_for(settings: AddressPoolSettings, env: Environment) -> PoolRefiller | None:
    if env is not Environment.DEVELOPMENT:
        return None
    return PoolRefiller(
        env=env, batch=settings.address_pool_refill_batch, keys_dir=settings.dev_pool_keys_dir
    )


class PoolMonitor:
    """One pass = read every pool's depth, publish it, warn on low water, refill in dev."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cooldown: timedelta,
        low_water: int,
        refiller: PoolRefiller | None,
    ) -> None:
        self._engine = engine
        self._cooldown = cooldown
        self._low_water = low_water
        self._refiller = refiller
        self._low: set[tuple[str, str, str]] = set()

    async def check(self, now: datetime | None = None) -> list[PoolDepth]:
        now = now or _now()
        async with self._engine.connect() as conn:
            depths = await repository.pool_depth(conn, now=now, cooldown=self._cooldown)
        self._publish(depths)
        low = [
            d
            for d in depths
            if not d.derived and d.available < self._low_water and d.mode == Mode.TEST.value
        ]
        if self._refiller is not None and low:
            for depth in low:
                async with self._engine.begin() as conn:
                    await self._refiller.refill(
                        conn, depth.merchant_id, ChainFamily(depth.family), depth.mode
                    )
            async with self._engine.connect() as conn:
                depths = await repository.pool_depth(conn, now=now, cooldown=self._cooldown)
            self._publish(depths)
        return depths

    def _publish(self, depths: list[PoolDepth]) -> None:
        # No await between clear and set: a scrape sees the old values or the new, never none.
        POOL_ADDRESSES.clear()
        POOL_LOW.clear()
        POOL_LOW_WATER.set(self._low_water)
        low_now: set[tuple[str, str, str]] = set()
        for d in depths:
            key = (d.merchant_id, d.family, d.mode)
            for state, value in (
                ("available", d.available),
                ("cooling", d.cooling),
                ("held", d.held),
                ("leased", d.leased),
            ):
                POOL_ADDRESSES.labels(*key, state).set(value)
            is_low = not d.derived and d.available < self._low_water
            POOL_LOW.labels(*key).set(1 if is_low else 0)
            if is_low:
                low_now.add(key)
        for key in sorted(low_now - self._low):
            merchant_id, family, mode = key
            log.warning(
                "deposit address pool below its low-water mark; import more addresses",
                extra={
                    "merchant_id": merchant_id,
                    "family": family,
                    "mode": mode,
                    "low_water": self._low_water,
                    "available": next(
                        d.available for d in depths if (d.merchant_id, d.family, d.mode) == key
                    ),
                },
            )
        self._low = low_now

    async def run(self, interval: float, stopping: asyncio.Event) -> None:
        """Check every ``interval`` seconds until ``stopping``; a failed pass is retried."""
        while not stopping.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("address pool check failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
