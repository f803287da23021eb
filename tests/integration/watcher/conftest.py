"""Fixtures of the watcher's process tests (helpers in tests/support/watcher.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pago.devstack.anvil import Anvil
from tests.support.watcher import chains_file


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    with Anvil.start(tmp_path_factory.mktemp("watcher-process-anvil")) as node:
        yield node


@pytest.fixture
def chains(tmp_path: Path, anvil: Anvil) -> Path:
    return chains_file(tmp_path / "chains.toml", anvil, confirmations=2)
