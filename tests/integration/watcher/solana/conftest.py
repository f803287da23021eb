"""Fixtures of the SOLANA watcher's tests: a Surfpool per module, a broker per test.

One simnet serves a module's tests: each test pays fresh owners and its watcher starts at the
finalized slot it finds, so what earlier tests left on the chain is history it never reads. Not
one for the whole run: Surfpool's ``getSignaturesForAddress`` slows as its history grows.
Each test gets a broker of its own, because a watcher's cursor is keyed by network and mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pago.devstack.surfpool import Surfpool
from tests.support.watcher_solana import chains_file


@pytest.fixture(scope="module")
def surfpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surfpool]:
    with Surfpool.start(tmp_path_factory.mktemp("watcher-surfpool")) as node:
        yield node


@pytest.fixture
def chains(tmp_path: Path, surfpool: Surfpool) -> Path:
    return chains_file(tmp_path / "chains.toml", surfpool)
