"""Composition root: ``create_app(settings)`` wires every adapter; the lifespan owns them.

The lifespan builds each feature's service once into ``ApiState`` (``app.state.pago``); the
endpoints reach them only through ``pago.api.dependencies.State``.

Tests call the same function with other settings (or another ``RateProvider``) instead of
patching anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request

from pago.api import events_docs, health
from pago.api.addresses import codec
from pago.api.addresses.pool import PoolMonitor, refiller_for
from pago.api.auth.service import Authenticator
from pago.api.cards import endpoints as card_endpoints
from pago.api.cards.wiring import build_card_service
from pago.api.checkout_page import endpoints as checkout_page_endpoints
from pago.api.checkout_page.service import CheckoutPageService
from pago.api.errors import install_error_handlers
from pago.api.idempotency import DurableStore, IdempotencyMiddleware, IdempotencyStore
from pago.api.middleware import (
    ErrorGuardMiddleware,
    MetricsMiddleware,
    PublicRateLimitMiddleware,
)
from pago.api.oauth import endpoints as oauth_endpoints
from pago.api.oauth.principal import SCOPE_SESSIONS_WRITE, ClientPrincipal
from pago.api.oauth.wiring import build_oauth
from pago.api.openapi import build_openapi
from pago.api.payment_exceptions import endpoints as payment_exceptions_endpoints
from pago.api.payment_exceptions.service import PaymentExceptionService
from pago.api.pricing.currencies import FIAT_MINOR_UNITS
from pago.api.pricing.provider import HttpRateProvider, RateProvider, StaticRateProvider
from pago.api.pricing.service import PricingService
from pago.api.ratelimit import Limit, RateLimiter
from pago.api.sessions import endpoints as sessions_endpoints
from pago.api.sessions.service import SessionService
from pago.api.settings import ApiSettings, RateProviderKind
from pago.api.state import ApiState
from pago.api.test_helpers import endpoints as test_helper_endpoints
from pago.api.test_helpers.service import TestHelperService
from pago.api.webhook_endpoints import endpoints as webhook_endpoints
from pago.api.webhook_endpoints.service import WebhookEndpointService
from pago.common.asyncapi import declare_publisher
from pago.common.channels import API_TRANSFERS
from pago.common.db.engine import create_engine
from pago.common.errors import ConfigError
from pago.common.health import HealthServer
from pago.common.kafka import create_broker, create_producer
from pago.common.outbox import OutboxRelay
from pago.common.redis import create_redis

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (by ``pago-api --workers N``, N > 1) when the workers write their metrics to files and
the server process serves them on the metrics port."""

API_VERSION = "1.0.0"
DESCRIPTION = """
Stablecoin checkout (USDT/USDC on TRON, SOLANA and EVM chains), wire-compatible with
IronixPay's Checkout Sessions API.

* **Auth**: `Authorization: Bearer sk_test_…|sk_live_…`; the key's mode selects test or live.
* **Errors**: every 4xx/5xx — validation, unknown routes (404), wrong methods (405) included —
  is `{"error": {"type", "code", "message", "param", "doc_url"}}`.
* **Amounts** are decimal strings without trailing zeros; `exchange_rate` has 8 decimals and
  is fiat units per 1 token.
* **Rate limits** answer 429 `rate_limited` with `Retry-After`.
"""


def create_app(settings: ApiSettings, *, rate_provider: RateProvider | None = None) -> FastAPI:
    registry = settings.registry
    broker = create_broker(settings.kafka_bootstrap_servers, client_id="pago-api")
    transfers = declare_publisher(broker, API_TRANSFERS)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            codec.preload()
            engine = create_engine(
                settings.database_url, pool_size=settings.db_pool_size, application_name="pago-api"
            )
            stack.push_async_callback(engine.dispose)
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            await broker.start()
            stack.push_async_callback(broker.stop)
            producer = create_producer(settings.kafka_bootstrap_servers, client_id="pago-api-relay")
            await producer.start()
            stack.push_async_callback(producer.stop)
            provider = rate_provider
            if provider is None:
                provider = await _default_provider(settings, stack)
            refiller = refiller_for(settings, settings.env)
            limiter = RateLimiter(redis)
            metrics: HealthServer | None = None
            if MULTIPROCESS_ENV not in os.environ:  # else the server process serves them all
                metrics = HealthServer(settings.api_metrics_port, ready=lambda: True)
                await metrics.start()
                stack.push_async_callback(metrics.stop)
            authenticator = Authenticator(
                # Lookups are single reads: autocommit spares a BEGIN/ROLLBACK round trip each.
                engine.execution_options(isolation_level="AUTOCOMMIT"),
                pepper=_pepper(settings),
                limiter=limiter,
                key_limit=Limit(settings.rate_limit_per_second, settings.rate_limit_burst),
                ip_limit=Limit(settings.ip_rate_limit_per_second, settings.ip_rate_limit_burst),
            )
            stack.push_async_callback(authenticator.aclose)
            pricing = PricingService(
                provider,
                redis,
                cache_seconds=settings.rate_cache_seconds,
                max_age_seconds=settings.rate_max_age_seconds,
            )
            records = DurableStore(engine, ttl_seconds=settings.idempotency_ttl_seconds)
            purger = asyncio.create_task(
                records.purge_forever(settings.idempotency_purge_seconds),
                name="idempotency-purge",
            )
            stack.push_async_callback(_cancel, purger)
            sessions = SessionService(
                registry=registry,
                pricing=pricing,
                checkout_base_url=settings.checkout_base_url,
                watch_grace=timedelta(minutes=settings.watch_grace_minutes),
                address_cooldown=settings.address_cooldown,
                pool_refiller=refiller,
            )
            cards = None
            if settings.cards.enabled_providers:
                # Its own pool for the card create's short transactions (see CardSessionService).
                trace_engine = create_engine(
                    settings.database_url,
                    pool_size=max(2, settings.db_pool_size // 4),
                    application_name="pago-api-cards",
                )
                stack.push_async_callback(trace_engine.dispose)
                cards = build_card_service(settings.cards, engine, redis, trace_engine=trace_engine)
            if cards is not None:
                stack.push_async_callback(cards.aclose)
            app.state.pago = ApiState(
                settings=settings,
                registry=registry,
                engine=engine,
                redis=redis,
                broker=broker,
                transfers=transfers,
                producer=producer,
                authenticator=authenticator,
                limiter=limiter,
                metrics=metrics,
                idempotency=IdempotencyStore(
                    redis,
                    ttl_seconds=settings.idempotency_ttl_seconds,
                    lock_seconds=settings.idempotency_lock_seconds,
                ),
                idempotency_records=records,
                sessions=sessions,
                webhook_endpoints=WebhookEndpointService(settings),
                payment_exceptions=PaymentExceptionService(),
                checkout_page=CheckoutPageService(
                    registry, checkout_base_url=settings.checkout_base_url
                ),
                test_helpers=TestHelperService(sessions=sessions, registry=registry),
                oauth=await build_oauth(settings, engine, limiter, _pepper(settings), stack),
                cards=cards,
            )
            if cards is not None:
                card_stopping = asyncio.Event()
                card_jobs = asyncio.create_task(
                    cards.run_jobs(settings.cards.jobs_interval_seconds, card_stopping),
                    name="card-session-jobs",
                )
                stack.push_async_callback(_stop_task, card_stopping, card_jobs)
            if settings.address_pool_check_seconds > 0:
                monitor = PoolMonitor(
                    engine,
                    cooldown=settings.address_cooldown,
                    low_water=settings.address_pool_low_water,
                    refiller=refiller,
                )
                stopping = asyncio.Event()
                checks = asyncio.create_task(
                    monitor.run(settings.address_pool_check_seconds, stopping),
                    name="address-pool-monitor",
                )
                stack.push_async_callback(_stop_task, stopping, checks)
            if settings.run_outbox_relay:
                relay = OutboxRelay(engine, producer)
                task = asyncio.create_task(relay.run(), name="outbox-relay")
                stack.push_async_callback(_stop_relay, relay, task)
            yield

    app = FastAPI(
        title="Pago API",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app, settings.error_doc_base_url)
    app.include_router(sessions_endpoints.router)
    app.include_router(test_helper_endpoints.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(payment_exceptions_endpoints.router)
    app.include_router(checkout_page_endpoints.router)
    app.include_router(card_endpoints.router)
    app.include_router(health.router)
    app.include_router(events_docs.router)
    oauth_endpoints.install(app)

    def state() -> ApiState:
        current: ApiState = app.state.pago
        return current

    # Added innermost first: ErrorGuard → Metrics → PublicRateLimit → Idempotency → routes.
    app.add_middleware(
        IdempotencyMiddleware,
        store=lambda: state().idempotency,
        durable=lambda: state().idempotency_records,
        admit=lambda: state().authenticator.admit,
        doc_base_url=settings.error_doc_base_url,
        oauth_admit=lambda: _card_writer(state()),
        oauth_paths=frozenset({CARD_SESSIONS_PATH}),
    )
    app.add_middleware(
        PublicRateLimitMiddleware,
        limiter=lambda: state().limiter,
        limit=Limit(settings.public_rate_limit_per_second, settings.public_rate_limit_burst),
        doc_base_url=settings.error_doc_base_url,
    )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(
        ErrorGuardMiddleware,
        doc_base_url=settings.error_doc_base_url,
        max_body_bytes=settings.max_body_bytes,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


CARD_SESSIONS_PATH = "/api/v1/sessions"
_WRITE = frozenset({SCOPE_SESSIONS_WRITE})


def _card_writer(state: ApiState) -> Callable[[Request], Awaitable[ClientPrincipal]]:
    """The idempotency middleware admits card creates as the route would (the same scope)."""

    async def admit(request: Request) -> ClientPrincipal:
        return await state.oauth.admit(request, _WRITE)

    return admit


def _pepper(settings: ApiSettings) -> bytes:
    if settings.api_key_pepper is None:  # SecretSettings fills it in (or refuses to start)
        raise ConfigError("PAGO_API_KEY_PEPPER is not set")
    return settings.api_key_pepper.get_secret_value().encode()


async def _default_provider(
    settings: ApiSettings, stack: contextlib.AsyncExitStack
) -> RateProvider:
    if settings.rate_provider is RateProviderKind.STATIC:
        return StaticRateProvider(settings.static_rates)
    client = httpx.AsyncClient(timeout=settings.rate_http_timeout_seconds)
    stack.push_async_callback(client.aclose)
    key = settings.rate_http_api_key
    return HttpRateProvider(
        client,
        settings.rate_http_url,
        FIAT_MINOR_UNITS,
        api_key=key.get_secret_value() if key else None,
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_relay(relay: OutboxRelay, task: asyncio.Task[None]) -> None:
    relay.stop()
    try:
        await asyncio.wait_for(task, timeout=10)
    except TimeoutError:
        task.cancel()


async def _stop_task(stopping: asyncio.Event, task: asyncio.Task[None]) -> None:
    stopping.set()
    try:
        await asyncio.wait_for(task, timeout=10)
    except TimeoutError:
        task.cancel()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = build_openapi(app)
    return app.openapi_schema
