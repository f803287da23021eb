"""Fixtures the end-to-end tests share: a chain, a broker of their own, a seeded merchant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.e2e.support import pipeline_env
from tests.support.api import Merchant, api_settings, seed_merchant
from tests.support.watcher import chains_file


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    with Anvil.start(tmp_path / "anvil") as node:
        yield node


@pytest.fixture
def api_port() -> int:
    """The port the test's api listens on."""
    return free_tcp_port()


@pytest.fixture
def evm_env(
    server_env: dict[str, str],
    db: AsyncEngine,
    anvil: Anvil,
    broker: KafkaServer,
    tmp_path: Path,
    api_port: int,
) -> dict[str, str]:
    """The pipeline's environment on this test's anvil (2 confirmations) and broker, the api on
    ``api_port``, the database emptied; the matcher screens nothing."""
    chains = chains_file(tmp_path / "chains.toml", anvil, confirmations=2)
    return pipeline_env(server_env, kafka=broker.bootstrap_servers, chains=chains, port=api_port)


@pytest.fixture
async def merchant(
    db: AsyncEngine, database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> Merchant:
    """A merchant seeded straight into the database, with its API key (the api's test data)."""
    settings = api_settings(database.url, redis_server.url, kafka.bootstrap_servers)
    return await seed_merchant(db, settings)
