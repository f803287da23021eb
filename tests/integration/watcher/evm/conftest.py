"""Fixtures of the EVM watcher's in-process tests: a real anvil, a broker per test, real Redis.

Each test gets a Kafka-protocol broker of its own (librdkafka's mock cluster starts in
< 0.1 s): a watcher's cursor and watch set are keyed by network and mode, so on a shared
broker one test's cursor would tell the next test's watcher where to start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pago.devstack.anvil import Anvil
from tests.support.watcher import chains_file


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One chain for every test here: each watcher starts at the head it finds (start_block),
    so what earlier tests left on the chain is history it never reads."""
    with Anvil.start(tmp_path_factory.mktemp("watcher-anvil")) as node:
        yield node


@pytest.fixture
def chains(tmp_path: Path, anvil: Anvil) -> Path:
    return chains_file(tmp_path / "chains.toml", anvil, confirmations=2)
