"""The api in-process with the Resolution API, and the matcher's resolution worker beside it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.payment_exceptions.service import PaymentExceptionService
from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.matcher import jobs
from tests.integration.api.payment_exceptions.support import Api, Worker
from tests.support.api import (
    Merchant,
    api_settings,
    running_app,
    seed_merchant,
    services_replaced,
)
from tests.support.matcher import BASE_URL


@pytest.fixture(scope="session")
def settings(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> ApiSettings:
    return api_settings(
        database.url, redis_server.url, kafka.bootstrap_servers, checkout_base_url=BASE_URL
    )


@pytest.fixture
async def merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    return await seed_merchant(db, settings)


@pytest.fixture
async def api(settings: ApiSettings) -> AsyncIterator[Api]:
    service = PaymentExceptionService(resolve_wait=3.0, poll_interval=0.02)
    async with running_app(settings) as (app, client):
        with services_replaced(app, payment_exceptions=service):
            yield Api(app, client)


@pytest.fixture
def resolution_worker(db: AsyncEngine) -> Worker:
    """The matcher's resolution worker, running for the ``async with`` block."""

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        stopping = asyncio.Event()

        async def job() -> int:
            return await jobs.apply_requested_resolutions(
                db, now=datetime.now(UTC), limit=100, checkout_base_url=BASE_URL
            )

        task = asyncio.create_task(
            jobs.run_periodically("resolutions", job, interval=0.02, full=100, stopping=stopping)
        )
        try:
            yield
        finally:
            stopping.set()
            await task

    return running
