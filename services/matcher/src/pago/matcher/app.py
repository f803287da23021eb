"""Composition root: build every adapter of one matcher process, run it, stop it cleanly.

``create_app(settings)`` wires the real adapters; tests call it with other arguments (a
screener with a fake provider, a recording consumer port, a fixed clock) instead of patching.
A process runs: the ``chain.transfers`` consumer (FastStream), an outbox relay (on its own
thread), the expiry scheduler, the resolution worker, the AML re-screening pass, a
sanctions-list reload check and the health/metrics endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.consumer import ConsumerPort, port_for
from pago.common.db.engine import create_engine
from pago.common.deadletter import DeadLetterWriter
from pago.common.events import SCHEMA_VERSION
from pago.common.health import HealthServer
from pago.common.redis import create_redis
from pago.matcher import jobs
from pago.matcher.aml.provider import GoPlusProvider, VerdictCache
from pago.matcher.aml.sanctions import SanctionsList
from pago.matcher.aml.screener import Screener
from pago.matcher.consumer import TransferBatchHandler, build_broker, utc_now
from pago.matcher.relay import RelayThread
from pago.matcher.service import TransferMatcher
from pago.matcher.settings import MatcherSettings

log = logging.getLogger(__name__)


def build_screener(
    settings: MatcherSettings, redis: Redis, http: httpx.AsyncClient | None
) -> Screener:
    sanctions = SanctionsList(
        settings.aml_list_path, reload_interval=settings.aml_list_reload_interval
    )
    provider = None
    if settings.aml_provider_url and http is not None:
        token = settings.aml_provider_token
        provider = GoPlusProvider(
            http,
            settings.aml_provider_url,
            settings.aml_chain_ids,
            name=settings.aml_provider_name,
            token=token.get_secret_value() if token else None,
        )
    else:
        log.info("no AML risk provider configured (PAGO_AML_PROVIDER_URL): level 2 is off")
    return Screener(
        sanctions,
        provider,
        VerdictCache(redis, ttl=settings.aml_cache_ttl) if provider else None,
        attempts=settings.aml_provider_attempts,
        backoff=settings.aml_provider_backoff,
        concurrency=settings.aml_provider_concurrency,
        failure_policy=settings.aml_failure_policy,
    )


class MatcherApp:
    def __init__(
        self,
        settings: MatcherSettings,
        *,
        engine: AsyncEngine,
        redis: Redis,
        http: httpx.AsyncClient,
        screener: Screener,
        matcher: TransferMatcher,
        handler: TransferBatchHandler,
        broker: KafkaBroker,
        deadletters: DeadLetterWriter,
        relay: RelayThread | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.http = http
        self.screener = screener
        self.matcher = matcher
        self.handler = handler
        self.broker = broker
        self.deadletters = deadletters
        self.relay = relay
        self.health = HealthServer(settings.http_port, ready=self.ready, alive=self.alive)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consuming = False
        handler.on_halt = self.request_stop

    def ready(self) -> bool:
        return self._consuming and not self._stopping.is_set()

    def alive(self) -> bool:
        """The loops run; a relay thread that died would leave events unpublished."""
        return self.relay is None or self.relay.healthy

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM/SIGINT): safe to call from a signal handler."""
        self._stopping.set()
        self.handler.stop()

    def reload_sanctions(self) -> None:
        """SIGHUP: re-read the sanctions files now if they changed."""
        self.screener.sanctions.request_reload()
        self.screener.sanctions.maybe_reload()

    def _every(
        self, name: str, job: Callable[[], Awaitable[int]], interval: float, full: int | None
    ) -> None:
        self._tasks.append(
            asyncio.create_task(
                jobs.run_periodically(
                    name, job, interval=interval, full=full, stopping=self._stopping
                ),
                name=f"pago-matcher-{name}",
            )
        )

    async def _expire(self) -> int:
        return await jobs.expire_due(
            self.engine,
            now=self._clock(),
            limit=self.settings.expiry_batch_size,
            checkout_base_url=self.settings.checkout_base_url,
            grace=self.settings.expiry_grace,
        )

    async def _resolve(self) -> int:
        return await jobs.apply_requested_resolutions(
            self.engine,
            now=self._clock(),
            limit=100,
            checkout_base_url=self.settings.checkout_base_url,
        )

    async def _rescreen(self) -> int:
        return await jobs.rescreen_held(
            self.engine, self.screener, self.matcher, now=self._clock(), limit=500
        )

    async def _reload_sanctions(self) -> int:
        self.screener.sanctions.maybe_reload()
        return 0

    async def start(self) -> None:
        await self.health.start()
        if self.relay is not None:
            await self.relay.start()
        await self.deadletters.start()
        await self.broker.start()
        self._consuming = True
        s = self.settings
        self._every("expiry", self._expire, s.expiry_interval, s.expiry_batch_size)
        self._every("resolutions", self._resolve, s.resolution_interval, 100)
        self._every("aml-rescreen", self._rescreen, s.aml_retry_interval, None)
        self._every("aml-list", self._reload_sanctions, s.aml_list_reload_interval, None)
        log.info(
            "matcher started",
            extra={"http_port": self.health.port, "relay": self.relay is not None},
        )

    async def stop(self) -> None:
        """Stop consuming (the batch in flight finishes and commits), then everything else."""
        self.request_stop()
        await self.broker.stop()  # waits up to graceful_timeout for the batch in flight
        self._consuming = False
        with contextlib.suppress(Exception):  # never started if the start failed before it
            await self.deadletters.stop()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=self.settings.shutdown_timeout)
        if self.relay is not None:
            await self.relay.stop(self.settings.shutdown_timeout)
        await self.health.stop()
        await self.http.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
        log.info("matcher stopped")

    async def run(self) -> None:
        """Start, serve until ``request_stop``, stop (also after a start that failed half-way)."""
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()


def create_app(
    settings: MatcherSettings,
    *,
    screener: Screener | None = None,
    port: Callable[[object], ConsumerPort] = port_for,
    clock: Callable[[], datetime] = utc_now,
    run_relay: bool | None = None,
    schema_version: int = SCHEMA_VERSION,
) -> MatcherApp:
    """The matcher's adapters; ``schema_version`` is the newest major event version it reads
    (a test stands up "the next release" with it)."""
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, application_name="pago-matcher"
    )
    redis = create_redis(settings.redis_url)
    http = httpx.AsyncClient(timeout=settings.aml_provider_timeout)
    screener = screener or build_screener(settings, redis, http)
    matcher = TransferMatcher(
        checkout_base_url=settings.checkout_base_url, registry=settings.registry
    )
    deadletters = DeadLetterWriter.create(settings.kafka_bootstrap_servers, settings.group_id)
    handler = TransferBatchHandler(
        engine,
        screener,
        matcher,
        deadletters=deadletters,
        schema_version=schema_version,
        max_backoff=settings.retry_max_backoff,
        batch_size=settings.batch_size,
        port=port,
        clock=clock,
    )
    broker = build_broker(
        settings.kafka_bootstrap_servers,
        handler,
        batch_size=settings.batch_size,
        batch_timeout_ms=settings.batch_timeout_ms,
        graceful_timeout=settings.shutdown_timeout,
        fetch_wait_ms=settings.fetch_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        group_id=settings.group_id,
    )
    relay = settings.run_relay if run_relay is None else run_relay
    return MatcherApp(
        settings,
        engine=engine,
        redis=redis,
        http=http,
        screener=screener,
        matcher=matcher,
        handler=handler,
        broker=broker,
        deadletters=deadletters,
        relay=RelayThread(settings.database_url, settings.kafka_bootstrap_servers)
        if relay
        else None,
        clock=clock,
    )
