"""Composition root: build every part of one watcher process, run it, stop it cleanly.

``create_app(settings)`` wires the real adapters; tests call it with other arguments (another
``ChainSource``, a ``SoloLease``) instead of patching. A process runs:

- the watchlist follower (always, so a standby's watch set is warm when it takes over);
- the leadership loop: wait for the watch set to load, take the lease, run a ``Scanner`` term
  while renewing the lease; on losing it cancel the term at once (nothing more is written);
  on SIGTERM stop the term gracefully (finish the publish in flight, write the cursor),
  release the lease so a standby takes over without waiting for the TTL;
- the health/metrics endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from aiokafka import AIOKafkaProducer

from pago.common.deadletter import DeadLetterWriter
from pago.common.health import HealthServer
from pago.common.kafka import create_producer
from pago.common.redis import create_redis
from pago.watcher import metrics
from pago.watcher.chains.factory import build_source
from pago.watcher.core.cursor import CursorStore
from pago.watcher.core.leadership import Lease, RedisLease, SoloLease
from pago.watcher.core.publisher import TransferPublisher
from pago.watcher.core.rpc import Backoff, WrongChain
from pago.watcher.core.scanner import Scanner, ScanOptions
from pago.watcher.core.source import ChainSource
from pago.watcher.core.stages import StagePolicy
from pago.watcher.core.watch_set import WatchSet
from pago.watcher.core.watchlist import WatchlistFollower
from pago.watcher.settings import Leadership, WatcherSettings

log = logging.getLogger(__name__)

Role = Literal["starting", "standby", "leader", "stopping"]

RING_MARGIN = 32
"""Blocks the reorg ring keeps beyond the confirmation depth, whatever ``ring_size`` says."""
TERM_RETRY = Backoff(base=1.0, cap=30.0)
"""Wait before taking the lease again after a term failed unexpectedly."""


class WatcherApp:
    def __init__(
        self,
        settings: WatcherSettings,
        *,
        source: ChainSource,
        producer: AIOKafkaProducer,
        lease: Lease,
        follower: WatchlistFollower,
        publisher: TransferPublisher,
        cursors: CursorStore,
        policy: StagePolicy,
        options: ScanOptions,
        instance: str,
        closers: tuple[Callable[[], Awaitable[object]], ...] = (),
    ) -> None:
        self.settings = settings
        self.source = source
        self.producer = producer
        self.lease = lease
        self.follower = follower
        self.publisher = publisher
        self.cursors = cursors
        self.policy = policy
        self.options = options
        self.instance = instance
        self._closers = closers
        self.role: Role = "starting"
        self.scanner: Scanner | None = None
        self.health = HealthServer(
            settings.http_port, alive=self.alive, ready=self.ready, status=self.status
        )
        self._stopping = asyncio.Event()
        self._follower_task: asyncio.Task[None] | None = None
        self._lead_task: asyncio.Task[None] | None = None
        labels = (source.network.value, source.mode.value)
        self._m_leader = metrics.LEADER.labels(*labels)
        self._m_changes = {
            event: metrics.LEADERSHIP_CHANGES.labels(*labels, event)
            for event in ("acquired", "lost", "released")
        }

    # -- probes ----------------------------------------------------------------------------

    def alive(self) -> bool:
        return all(t is None or not t.done() for t in (self._follower_task, self._lead_task))

    def ready(self) -> bool:
        if not self.follower.loaded.is_set() or self._stopping.is_set() or not self.alive():
            return False
        if self.role == "standby":
            return True
        scanner = self.scanner
        if self.role != "leader" or scanner is None or scanner.head is None:
            return False
        if self.source.endpoints.chain_stalled:
            return False
        fresh = max(self.settings.stale_after, 5 * self.settings.poll_interval)
        return time.monotonic() - scanner.head_at < fresh

    def status(self) -> dict[str, object]:
        scanner = self.scanner
        return {
            "network": self.source.network.value,
            "mode": self.source.mode.value,
            "role": self.role,
            "instance": self.instance,
            "watch_set": len(self.follower.watch_set),
            "watch_set_loaded": self.follower.loaded.is_set(),
            **(scanner.status() if scanner is not None and self.role == "leader" else {}),
            "endpoints": self.source.endpoints.describe(),
        }

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM/SIGINT); safe to call from a signal handler."""
        self._stopping.set()
        self.follower.stop()
        if self.scanner is not None:
            self.scanner.request_stop()

    async def start(self) -> None:
        # Before anything else: an endpoint on another chain must never serve a head or a range,
        # and with none on the right chain there is nothing to run (``WrongChain``).
        await self.source.check_identity()
        await self.health.start()
        await self.producer.start()
        self._follower_task = asyncio.create_task(self.follower.run(), name="watchlist")
        self._lead_task = asyncio.create_task(self._lead(), name="leadership")
        log.info(
            "watcher started",
            extra={
                "network": self.source.network.value,
                "mode": self.source.mode.value,
                "http_port": self.health.port,
                "instance": self.instance,
                "endpoints": [e["endpoint"] for e in self.source.endpoints.describe()],
            },
        )

    async def run(self) -> None:
        """Start, serve until ``request_stop`` (or a part dies), stop. Raises if a part died
        (``WrongChain`` at once when no endpoint serves the configured chain)."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        parts = [t for t in (self._follower_task, self._lead_task) if t is not None]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stop, *parts], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            failed = [t for t in parts if t.done() and not t.cancelled()]
            await self.stop()
        for task in failed:
            error = task.exception()
            if error is not None:
                raise error

    async def stop(self) -> None:
        self.request_stop()
        self.role = "stopping"
        if self._lead_task is not None:
            try:
                await asyncio.wait_for(self._lead_task, timeout=self.settings.shutdown_timeout)
            except TimeoutError:
                log.error("the scan did not stop in time; the cursor may be behind")
            except Exception:
                log.exception("leadership loop failed")
        if self._follower_task is not None:
            self._follower_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower_task
        with contextlib.suppress(Exception):
            await self.producer.stop()  # flushes whatever is still buffered
        await self.source.aclose()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        await self.health.stop()
        log.info("watcher stopped")

    # -- leadership ------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _lead(self) -> None:
        loaded = asyncio.create_task(self.follower.loaded.wait())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([loaded, stop], return_when=asyncio.FIRST_COMPLETED)
        loaded.cancel()
        stop.cancel()
        failures = 0
        while not self._stopping.is_set():
            if not await self.lease.acquire():
                if self.role != "standby":
                    log.info("standing by: another replica holds the lease")
                self.role = "standby"
                await self._sleep(self.settings.lease_retry)
                continue
            failed = await self._term()
            failures = failures + 1 if failed else 0
            if failed:
                await self._sleep(TERM_RETRY.delay(failures))

    async def _term(self) -> bool:
        """One leadership term; True if it ended by an unexpected error."""
        self.role = "leader"
        self._m_leader.set(1)
        self._m_changes["acquired"].inc()
        log.info("leading: this replica scans now", extra={"fence": self.lease.fence})
        scanner = Scanner(
            self.source,
            self.follower,
            self.publisher,
            self.cursors,
            self.lease,
            self.policy,
            self.options,
        )
        self.scanner = scanner
        if self._stopping.is_set():
            scanner.request_stop()
        task = asyncio.create_task(scanner.run(), name="scan")
        lost = failed = False
        try:
            while not task.done():
                stop = asyncio.create_task(self._stopping.wait())
                await asyncio.wait(
                    [task, stop],
                    timeout=self.settings.lease_renew,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stop.cancel()
                if task.done():
                    break
                if self._stopping.is_set():
                    scanner.request_stop()
                    await asyncio.wait([task])
                    break
                if not await self.lease.renew():
                    lost = True
                    log.error("lease lost: stopping the scan at once (nothing more is written)")
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    break
            if task.done() and not task.cancelled() and task.exception() is not None:
                failed = True
                error = task.exception()
                if isinstance(error, WrongChain):
                    raise error  # every endpoint turned out to serve another chain: stop
                log.error("scan term failed", exc_info=error)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._m_leader.set(0)
            if lost:
                self._m_changes["lost"].inc()
            else:
                await self.lease.release()
                self._m_changes["released"].inc()
            if self.role == "leader":
                self.role = "standby"
        return failed


def create_app(
    settings: WatcherSettings,
    *,
    source: ChainSource | None = None,
    lease: Lease | None = None,
    instance: str | None = None,
) -> WatcherApp:
    source = source or build_source(settings)
    network_spec = settings.registry.network(settings.network)
    confirmations = network_spec.confirmations_for(settings.mode)
    policy = StagePolicy(
        confirmations=confirmations,
        detect_depth=settings.detect_depth,
        use_finalized=settings.confirm_finalized,
    )
    options = ScanOptions(
        initial_range=min(settings.initial_range, settings.max_range),
        max_range=settings.max_range,
        concurrency=settings.concurrency,
        poll_interval=settings.poll_interval,
        cursor_interval=settings.cursor_interval,
        ring_size=max(settings.ring_size, confirmations + RING_MARGIN),
        start_block=settings.start_block,
        backfill_blocks=settings.backfill_blocks,
        backfill_margin=settings.backfill_margin,
        backfill_max_age=settings.backfill_max_age,
        progress_interval=settings.progress_interval,
    )
    client_id = f"pago-watcher-{settings.network.value.lower()}-{settings.mode.value}"
    producer = create_producer(settings.kafka_bootstrap_servers, client_id=client_id)
    closers: list[Callable[[], Awaitable[object]]] = []
    if lease is None:
        if settings.leadership is Leadership.REDIS:
            redis = create_redis(settings.redis_url)
            closers.append(redis.aclose)
            lease = RedisLease(
                redis,
                f"{settings.network.value}:{settings.mode.value}",
                ttl=settings.lease_ttl,
                instance=instance,
            )
        else:
            lease = SoloLease()
    instance = getattr(lease, "instance", None) or instance or "solo"
    follower = WatchlistFollower(
        settings.kafka_bootstrap_servers,
        settings.network,
        settings.mode,
        WatchSet(source.key_size),
        source.address_key,
        retention_seconds=settings.watch_retention,
        deadletters=DeadLetterWriter(producer, client_id),
    )
    return WatcherApp(
        settings,
        source=source,
        producer=producer,
        lease=lease,
        follower=follower,
        publisher=TransferPublisher(producer, settings.network, settings.mode),
        cursors=CursorStore(
            settings.kafka_bootstrap_servers, producer, settings.network, settings.mode
        ),
        policy=policy,
        options=options,
        instance=instance,
        closers=tuple(closers),
    )
