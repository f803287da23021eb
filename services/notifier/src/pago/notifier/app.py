"""Composition root: build every adapter of one notifier process, run it, stop it cleanly.

``create_app(settings)`` wires the real adapters; tests call it with other arguments (a
resolver that answers chosen addresses, a fixed clock, a seeded random source) instead of
patching. A process runs the ``checkout.sessions`` consumer (FastStream), which also feeds
the hosted page's live feed in Redis, and the ``card.sessions`` consumer beside it on the same
broker (its own group); the delivery worker; a backlog sampler; and the health/metrics
endpoint.

Stopping (SIGTERM/SIGINT): consuming stops first — the batch in flight finishes, is stored and
its offsets committed —, then the worker claims nothing more and waits for the requests in
flight (each bounded by the 10 s timeout) and records their outcomes, then the rest closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime

import httpx
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.engine import create_engine
from pago.common.deadletter import DeadLetterWriter
from pago.common.health import HealthServer
from pago.common.redis import create_redis
from pago.notifier.clients import PerEndpointClients
from pago.notifier.consumer import CardSessionEventHandler, SessionEventHandler, build_broker
from pago.notifier.guard import (
    EgressPolicy,
    GuardedBackend,
    GuardedTransport,
    Resolver,
    system_resolver,
)
from pago.notifier.live import LiveFeed
from pago.notifier.schedule import RetryPolicy
from pago.notifier.sender import Sender, utc_now
from pago.notifier.settings import NotifierSettings
from pago.notifier.worker import DeliveryWorker

log = logging.getLogger(__name__)

BACKLOG_SAMPLE_INTERVAL = 15.0


class NotifierApp:
    def __init__(
        self,
        settings: NotifierSettings,
        *,
        engine: AsyncEngine,
        http: PerEndpointClients,
        redis: Redis | None,
        worker: DeliveryWorker,
        handler: SessionEventHandler,
        cards: CardSessionEventHandler,
        broker: KafkaBroker,
        deadletters: DeadLetterWriter,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.http = http
        self.redis = redis
        self.worker = worker
        self.handler = handler
        self.cards = cards
        self.broker = broker
        self.deadletters = deadletters
        self.health = HealthServer(settings.http_port, ready=self.ready)
        self._stopping = asyncio.Event()
        self._consuming = False
        self._worker_task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        handler.on_halt = self.request_stop
        cards.on_halt = self.request_stop

    def ready(self) -> bool:
        worker_alive = self._worker_task is not None and not self._worker_task.done()
        return self._consuming and worker_alive and not self._stopping.is_set()

    def request_stop(self) -> None:
        """Begin a graceful stop: safe to call from a signal handler."""
        self._stopping.set()
        self.handler.stop()
        self.cards.stop()

    async def start(self) -> None:
        await self.health.start()
        self._worker_task = asyncio.create_task(
            self.worker.run(drain_timeout=self.settings.shutdown_timeout),
            name="pago-notifier-worker",
        )
        await self.deadletters.start()
        await self.broker.start()
        self._consuming = True
        self._sampler = asyncio.create_task(self._sample(), name="pago-notifier-sampler")
        log.info(
            "notifier started",
            extra={
                "http_port": self.health.port,
                "group_id": self.settings.group_id,
                "card_group_id": self.settings.card_group,
            },
        )

    async def stop(self) -> None:
        """Stop consuming (the batch in flight finishes and commits), then everything else."""
        self.request_stop()
        await self.broker.stop()  # waits up to graceful_timeout for the batch in flight
        self._consuming = False
        with contextlib.suppress(Exception):  # never started if the start failed before it
            await self.deadletters.stop()
        self.worker.stop()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(
                    self._worker_task, timeout=self.settings.shutdown_timeout * 2
                )
            except TimeoutError:
                log.error("the delivery worker did not stop in time")
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await self.health.stop()
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        log.info("notifier stopped")

    async def run(self) -> None:
        """Start, serve until ``request_stop``, stop (also after a start that failed half-way)."""
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()

    async def _sample(self) -> None:
        """Housekeeping: the backlog gauge, and closing idle endpoint connection pools."""
        while True:
            try:
                await self.worker.sample_backlog()
            except Exception:
                log.warning("could not sample the delivery backlog", exc_info=True)
            await self.http.sweep()
            await asyncio.sleep(BACKLOG_SAMPLE_INTERVAL)


def build_http_client(
    settings: NotifierSettings, resolver: Resolver = system_resolver
) -> PerEndpointClients:
    """What every webhook goes through: guarded, no redirects, no proxies from the environment
    (a proxy would connect on our behalf to addresses the guard never saw), a pool per
    endpoint (see ``clients``)."""
    backend = GuardedBackend(
        EgressPolicy(
            allow_loopback=settings.loopback_allowed, allowed_networks=settings.allowed_networks
        ),
        resolver=resolver,
    )
    limits = httpx.Limits(
        max_connections=settings.endpoint_concurrency,
        max_keepalive_connections=settings.endpoint_concurrency,
        keepalive_expiry=30,
    )

    context = httpx.create_ssl_context(trust_env=False)

    def factory() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=GuardedTransport(backend, limits=limits, ssl_context=context),
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            trust_env=False,
        )

    return PerEndpointClients(factory)


def create_app(
    settings: NotifierSettings,
    *,
    resolver: Resolver = system_resolver,
    clock: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
) -> NotifierApp:
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, application_name="pago-notifier"
    )
    http = build_http_client(settings, resolver)
    sender = Sender(
        http,
        RetryPolicy(unit=settings.retry_unit, jitter=settings.retry_jitter, rng=rng),
        timeout=settings.timeout,
        clock=clock,
    )
    worker = DeliveryWorker(
        engine,
        sender,
        concurrency=settings.concurrency,
        endpoint_concurrency=settings.endpoint_concurrency,
        lease=settings.lease,
        poll_interval=settings.poll_interval,
    )
    redis = create_redis(settings.redis_url) if settings.live_feed else None
    deadletters = DeadLetterWriter.create(settings.kafka_bootstrap_servers, settings.group_id)
    handler = SessionEventHandler(
        engine,
        on_stored=worker.wake,
        deadletters=deadletters,
        max_backoff=settings.retry_max_backoff,
        live=LiveFeed(redis) if redis is not None else None,
    )
    # One dead-letter writer for both topics: a letter's headers name its source topic.
    cards = CardSessionEventHandler(
        engine,
        on_stored=worker.wake,
        deadletters=deadletters,
        max_backoff=settings.retry_max_backoff,
    )
    broker = build_broker(
        settings.kafka_bootstrap_servers,
        handler,
        cards=cards,
        card_group_id=settings.card_group,
        group_id=settings.group_id,
        batch_size=settings.batch_size,
        batch_timeout_ms=settings.batch_timeout_ms,
        graceful_timeout=settings.shutdown_timeout,
        fetch_wait_ms=settings.fetch_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )
    return NotifierApp(
        settings,
        engine=engine,
        http=http,
        redis=redis,
        worker=worker,
        handler=handler,
        cards=cards,
        broker=broker,
        deadletters=deadletters,
    )
