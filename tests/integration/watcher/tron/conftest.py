"""Fixtures of the TRON watcher's tests: a local TRON node on a fresh chain, a broker per test
(a watcher's cursor is keyed by network and mode, so a shared broker would leak one test's
cursor into the next), and the session's real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.tron_node import TronChain, TronNode
from tests.support.watcher_tron import chains_file, new_chain


@pytest.fixture
def chain() -> TronChain:
    chain = new_chain()
    chain.mine(30)  # some history below the watcher's first block
    return chain


@pytest.fixture
async def node(chain: TronChain) -> AsyncIterator[TronNode]:
    async with TronNode(chain) as served:
        yield served


@pytest.fixture
def chains(tmp_path: Path, node: TronNode) -> Path:
    return chains_file(tmp_path / "chains.toml", node.url, genesis=node.chain.blocks[0].id)
