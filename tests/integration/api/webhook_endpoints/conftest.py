"""The api in-process (real lifespan, Postgres, Redis, Kafka) with the webhook endpoints
router, a receiver, and a delivery worker to send what the api queued (pings, redeliveries)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.clients import SingleClient
from pago.notifier.guard import EgressPolicy, GuardedBackend, GuardedTransport
from pago.notifier.schedule import RetryPolicy
from pago.notifier.sender import Sender
from pago.notifier.worker import DeliveryWorker
from tests.integration.api.webhook_endpoints.support import webhook_settings
from tests.support.api import (
    Merchant,
    api_settings,
    running_app,
    seed_merchant,
)
from tests.support.receiver import Receiver


@pytest.fixture(scope="module")
def settings(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> ApiSettings:
    return api_settings(database.url, redis_server.url, kafka.bootstrap_servers)


@pytest.fixture(scope="module")
async def api(settings: ApiSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(settings) as (app, client):
        yield app, client


@pytest.fixture
def client(api: tuple[FastAPI, httpx.AsyncClient], db: AsyncEngine) -> Iterator[httpx.AsyncClient]:
    """The module's app with an empty database; development defaults (loopback URLs allowed)."""
    app, http = api
    with webhook_settings(app, env="development"):
        yield http


@pytest.fixture
def app(api: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return api[0]


@pytest.fixture
async def merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    return await seed_merchant(db, settings, xpub_families=(), solana_pool=0, sub_merchants=())


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def hooks(receiver: Receiver) -> Receiver:
    receiver.reset()
    return receiver


@pytest.fixture
async def worker(db: AsyncEngine) -> AsyncIterator[DeliveryWorker]:
    """The notifier's worker on its own; ``run_once`` sends what is due."""
    backend = GuardedBackend(EgressPolicy(allow_loopback=True))
    async with httpx.AsyncClient(
        transport=GuardedTransport(backend, limits=httpx.Limits())
    ) as http:
        sender = Sender(SingleClient(http), RetryPolicy(jitter=0.0), timeout=2)
        yield DeliveryWorker(
            db, sender, concurrency=4, endpoint_concurrency=4, lease=10, poll_interval=0.05
        )
