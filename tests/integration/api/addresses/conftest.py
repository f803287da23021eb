"""The api in-process beside the matcher's own code (its transfer matcher and expiry job), on the
suite's real Postgres, Redis and Kafka-protocol broker: the two halves of a pool address's life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.support.api import SettingsFactory, api_settings, running_app
from tests.support.matcher import BASE_URL


@pytest.fixture(scope="session")
def make_settings(
    database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> SettingsFactory:
    def make(**overrides: Any) -> ApiSettings:
        return api_settings(
            database.url,
            redis_server.url,
            kafka.bootstrap_servers,
            checkout_base_url=BASE_URL,
            **overrides,
        )

    return make


@pytest.fixture(scope="session")
def settings(make_settings: SettingsFactory) -> ApiSettings:
    return make_settings()


@pytest.fixture(scope="session")
async def app_client(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as (_, client):
        yield client


@pytest.fixture
def client(app_client: httpx.AsyncClient, db: object) -> httpx.AsyncClient:
    """The session's app (default settings) over an empty database."""
    return app_client
