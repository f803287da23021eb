"""TRON: the chain each endpoint serves is its block 0's ``blockID`` (issue 11, item 8). A node
of another TRON network (Nile behind a mainnet watcher, say) is refused and never used; with
none on the configured chain the watcher does not run. And every transfer carries its block's
own time (the header's ``timestamp``, milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from pago.watcher.core.rpc import WrongChain, redact_url
from tests.support.tron_node import TronChain, TronNode
from tests.support.watcher import by_stage, running
from tests.support.watcher_tron import (
    chains_file,
    new_addresses,
    new_chain,
    pay_each_until_confirmed,
    tron_settings,
    watch,
)


async def test_a_node_of_another_network_is_refused_and_the_right_one_used(
    chain: TronChain,
    node: TronNode,
    broker: KafkaServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    kafka = broker.bootstrap_servers
    other = new_chain(seed=7)
    assert other.blocks[0].id != chain.blocks[0].id
    async with TronNode(other) as stranger:
        chains = chains_file(
            tmp_path / "chains.toml", stranger.url, node.url, genesis=chain.blocks[0].id
        )
        addresses = new_addresses(2)
        await watch(kafka, addresses)
        settings = tron_settings(kafka, redis_server.url, chains, start_block=chain.head.number + 1)
        async with running(create_app(settings)) as app:
            txs, seen = await pay_each_until_confirmed(chain, kafka, addresses)
            status = app.status()
    assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == {tx.txid for tx in txs}
    assert set(stranger.requests) == {"wallet/getblockbynum"}, "asked for block 0, nothing more"
    endpoints = {e["endpoint"]: e for e in status["endpoints"]}  # type: ignore[attr-defined]
    assert endpoints[redact_url(stranger.url)]["wrong_chain"] == other.blocks[0].id
    assert endpoints[redact_url(node.url)]["wrong_chain"] is None
    for t in seen:
        located = chain.locate(t.tx_hash)
        assert located is not None
        block, _ = located
        assert t.block_time == datetime.fromtimestamp(block.timestamp / 1000, UTC)


async def test_with_no_node_on_the_configured_network_the_watcher_does_not_run(
    chain: TronChain, node: TronNode, broker: KafkaServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    nile = "0000000000000000d698d4192c56cb6be724a558448e2684802de4d6cd8690dc"
    chains = chains_file(tmp_path / "chains.toml", node.url, genesis=nile)
    app = create_app(tron_settings(broker.bootstrap_servers, redis_server.url, chains))
    with pytest.raises(WrongChain, match=f"serves {chain.blocks[0].id}"):
        await app.run()
