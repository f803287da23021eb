"""Fixtures of the api's integration tests (servers, subprocesses, what reached the broker)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.support.api import Merchant, api_settings, seed_merchant


@pytest.fixture(scope="session")
def settings(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> ApiSettings:
    return api_settings(database.url, redis_server.url, kafka.bootstrap_servers)


@pytest.fixture
async def merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    return await seed_merchant(db, settings)
