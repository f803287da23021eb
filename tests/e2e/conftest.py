"""Fixtures the end-to-end tests share: a chain, a broker of their own, a seeded merchant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.component.api.support import Merchant, api_settings, seed_merchant


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    with Anvil.start(tmp_path / "anvil") as node:
        yield node


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    """This test's own broker: its watcher's cursor and the matcher's group start clean."""
    server = KafkaServer.start(env={})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def merchant(
    db: AsyncEngine, database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> Merchant:
    """A merchant seeded straight into the database, with its API key (the api's test data)."""
    settings = api_settings(database.url, redis_server.url, kafka.bootstrap_servers)
    return await seed_merchant(db, settings)
