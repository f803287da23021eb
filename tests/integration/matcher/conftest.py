"""A running matcher (the real composition root) on the test run's Postgres, Redis and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from pago.common.kafka import create_producer
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.matcher.app import MatcherApp, create_app
from tests.support.goplus import FakeGoPlus
from tests.support.matcher import (
    matcher_settings,
)


@pytest.fixture(scope="module")
async def goplus() -> AsyncIterator[FakeGoPlus]:
    server = FakeGoPlus()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def provider(goplus: FakeGoPlus) -> FakeGoPlus:
    """The module's provider, answering normally at the start of every test."""
    goplus.mode = "ok"
    goplus.flags.clear()
    goplus.requests.clear()
    return goplus


@pytest.fixture(scope="module")
async def matcher(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, goplus: FakeGoPlus
) -> AsyncIterator[MatcherApp]:
    app = create_app(matcher_settings(database, redis_server, kafka, aml_provider_url=goplus.url))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="module")
async def producer(kafka: KafkaServer) -> AsyncIterator[AIOKafkaProducer]:
    producer = create_producer(kafka.bootstrap_servers, client_id="matcher-tests")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
