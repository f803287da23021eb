"""Fixtures of the api's component tests: one running app for the session, fresh data per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.support.api import TEST_RATES, Merchant, api_settings, running_app, seed_merchant
from tests.support.database import empty_database


@pytest.fixture(scope="session")
def settings(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> ApiSettings:
    return api_settings(
        database.url, redis_server.url, kafka.bootstrap_servers, static_rates=TEST_RATES
    )


@pytest.fixture(scope="session")
async def app_client(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as (_, client):
        yield client


@pytest.fixture
async def client(app_client: httpx.AsyncClient, db: AsyncEngine, redis: Redis) -> httpx.AsyncClient:
    """The session's app, with an empty database and an empty Redis."""
    return app_client


@pytest.fixture
async def merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    return await seed_merchant(db, settings)


@pytest.fixture(scope="class")
async def shared_merchant(engine: AsyncEngine, settings: ApiSettings) -> Merchant:
    """One merchant for a whole class of tests that only read or are refused: the per-test
    truncate-and-seed would be most of their run time."""
    await empty_database(engine)
    return await seed_merchant(engine, settings)


@pytest.fixture
async def other_merchant(db: AsyncEngine, settings: ApiSettings, merchant: Merchant) -> Merchant:
    return await seed_merchant(db, settings, name="Other Co", account=1, sub_merchants=("shop-a",))
