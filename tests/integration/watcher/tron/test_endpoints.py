"""Endpoint trouble, for real: a dead primary (nothing listens, or a 503 load balancer), and the
only node hanging and coming back. The watcher fails over or waits; it never skips a block."""

from __future__ import annotations

from pathlib import Path

import pytest

from pago.common.enums import TransferStage
from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import WatcherApp, create_app
from pago.watcher.core.rpc import redact_url
from tests.support.tron_node import TronChain, TronNode, key_of
from tests.support.watcher import by_stage, eventually, read_transfers, running
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    USDT,
    USDT_KEY,
    chains_file,
    new_addresses,
    pay_each_until_confirmed,
    tron_settings,
    watch,
)


@pytest.mark.parametrize("dead", ["nothing listens", "503"])
async def test_fails_over_from_a_dead_primary(
    chain: TronChain,
    node: TronNode,
    broker: KafkaServer,
    redis_server: RedisServer,
    tmp_path: Path,
    dead: str,
) -> None:
    kafka = broker.bootstrap_servers
    async with TronNode(chain) as broken:
        if dead == "503":
            await broken.down("503")
            primary = broken.url + "/SECRETKEY"
        else:
            primary = f"http://127.0.0.1:{free_tcp_port()}/SECRETKEY"
        chains = chains_file(
            tmp_path / "chains.toml", primary, node.url, genesis=chain.blocks[0].id
        )
        addresses = new_addresses(3)
        await watch(kafka, addresses)
        settings = tron_settings(
            kafka,
            redis_server.url,
            chains,
            start_block=chain.head.number + 1,
            tron_api_key="k-e2b7",
        )
        async with running(create_app(settings)) as app:
            txs, seen = await pay_each_until_confirmed(chain, kafka, addresses)
            status = app.status()
    assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == {tx.txid for tx in txs}
    assert node.api_keys == {"k-e2b7"}, "TRON-PRO-API-KEY reaches the endpoint"
    label = redact_url(primary)
    assert "SECRETKEY" not in label
    endpoints = {e["endpoint"]: e for e in status["endpoints"]}  # type: ignore[attr-defined]
    assert endpoints[label]["failures"] > 0
    assert endpoints[redact_url(node.url)]["failures"] == 0


def _failures(app: WatcherApp) -> int:
    endpoints = app.status()["endpoints"]
    assert isinstance(endpoints, list)
    return sum(int(e["failures"]) for e in endpoints)


async def test_a_node_that_hangs_then_comes_back(
    chain: TronChain,
    node: TronNode,
    broker: KafkaServer,
    redis_server: RedisServer,
    chains: Path,
) -> None:
    """The only endpoint stops answering (requests hang past the timeout): readiness fails,
    nothing is published or skipped; once it answers again, the payments made meanwhile are
    confirmed and the watcher is ready again."""
    kafka = broker.bootstrap_servers
    before, during = new_addresses(2)
    await watch(kafka, [before, during])
    settings = tron_settings(
        kafka,
        redis_server.url,
        chains,
        start_block=chain.head.number + 1,
        rpc_timeout=0.5,
        stale_after=1.0,
    )
    async with running(create_app(settings)) as app:
        first = chain.trc20_transfer(USDT_KEY, key_of(before), 1 * USDT)
        chain.mine(CONFIRMATIONS + 1)
        await read_transfers(kafka, lambda f: any(t.tx_hash == first.txid for t in f))

        await node.down("hang")
        await eventually(lambda: not app.ready(), what="readiness to fail")
        tried = _failures(app)
        second = chain.trc20_transfer(USDT_KEY, key_of(during), 2 * USDT)
        chain.mine(CONFIRMATIONS + 1)
        # Not a pause but a sign: the watcher asked the hung node again (and failed) after the
        # payment was mined, so had it anything to publish, it would have tried by now.
        await eventually(lambda: _failures(app) >= tried + 2, what="another failed request")
        meanwhile = await read_transfers(kafka, lambda f: True, timeout=1)
        assert second.txid not in {t.tx_hash for t in meanwhile}

        await node.up()
        seen = await read_transfers(
            kafka,
            lambda f: any(
                t.tx_hash == second.txid and t.stage is TransferStage.CONFIRMED for t in f
            ),
        )
        await eventually(app.ready, what="readiness to come back")
        scanner = app.scanner
        assert scanner is not None
        assert scanner.cursor is not None
        cursor = scanner.cursor
    confirmed = by_stage(seen)["confirmed"]
    assert {t.tx_hash for t in confirmed} == {first.txid, second.txid}
    assert [t.amount_raw for t in confirmed if t.tx_hash == second.txid] == [2 * USDT]
    assert cursor.hash == chain.blocks[cursor.number].id
