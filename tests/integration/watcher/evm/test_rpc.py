"""RPC trouble, for real: a dead endpoint, a node that stopped following the chain, and a
provider that refuses large ranges. Nothing may be skipped in any of them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from pago.common.enums import TransferStage
from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from pago.watcher.core.rpc import redact_url
from tests.support.watcher import (
    NETWORK,
    Payment,
    RangeLimitingProxy,
    by_stage,
    endpoint_counts,
    eventually,
    frozen_fork,
    new_addresses,
    pay_each_until_confirmed,
    pay_in_one_block,
    read_transfers,
    running,
    watch,
    watcher_settings,
)


def _errors(endpoint: str) -> float:
    return sum(endpoint_counts("pago_watcher_rpc_errors", endpoint, "reason").values())


class TestEndpoints:
    async def test_fails_over_from_a_dead_endpoint(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        dead = f"http://127.0.0.1:{free_tcp_port()}/v3/SECRETKEY"  # nothing listens there
        addresses = new_addresses(anvil, 3)
        await watch(kafka, addresses)
        settings = watcher_settings(
            kafka,
            redis_server.url,
            chains,
            rpc_urls=f"{dead},{anvil.rpc_url}",  # the dead one is the primary
            start_block=anvil.web3.eth.block_number + 1,
        )
        async with running(create_app(settings)) as app:
            hashes, seen = await pay_each_until_confirmed(anvil, kafka, addresses, 100)
            status = app.status()
        assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == set(hashes)
        label = redact_url(dead)
        assert "SECRETKEY" not in label, "API keys in URLs never reach logs or metrics"
        assert _errors(label) > 0, "errors are counted per endpoint"
        assert _errors(redact_url(anvil.rpc_url)) == 0
        dead_state = next(e for e in status["endpoints"] if e["endpoint"] == label)  # type: ignore[attr-defined]
        assert dead_state["failures"] > 0

    async def test_avoids_a_node_whose_head_stopped(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        (address,) = new_addresses(anvil, 1)
        await watch(kafka, [address])
        with frozen_fork(anvil) as stale:
            settings = watcher_settings(
                kafka,
                redis_server.url,
                chains,
                rpc_urls=f"{stale},{anvil.rpc_url}",  # the stale one is the primary
                start_block=anvil.web3.eth.block_number + 1,
                stale_blocks=1,
            )
            async with running(create_app(settings)) as app:
                (tx,) = await asyncio.to_thread(
                    pay_in_one_block, anvil, [Payment("USDC", 2, address, 77)]
                )
                await asyncio.to_thread(anvil.mine, 3)
                seen = await read_transfers(
                    kafka, lambda f: any(t.stage is TransferStage.CONFIRMED for t in f)
                )
                states = {e["endpoint"]: e for e in app.status()["endpoints"]}  # type: ignore[attr-defined]
                assert app.ready()
        assert {t.tx_hash for t in seen} == {tx}
        assert seen[-1].stage is TransferStage.CONFIRMED
        assert states[redact_url(stale)]["stale"] is True
        assert states[redact_url(anvil.rpc_url)]["stale"] is False
        value = REGISTRY.get_sample_value(
            "pago_watcher_endpoint_stale", {"network": NETWORK, "endpoint": redact_url(stale)}
        )
        assert value == 1.0

    async def test_a_chain_that_stops_fails_readiness(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """With every head frozen there is nothing better to use: the watcher keeps polling
        and says so on /readyz."""
        with frozen_fork(anvil) as stale:
            settings = watcher_settings(
                broker.bootstrap_servers,
                redis_server.url,
                chains,
                rpc_urls=stale,
                stale_after=0.5,
            )
            async with running(create_app(settings)) as app:
                await eventually(lambda: not app.ready(), timeout=10, what="readiness to fail")
                assert app.alive()


class TestRanges:
    async def test_ranges_shrink_to_a_provider_limit_and_skip_nothing(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        addresses = new_addresses(anvil, 6)
        await watch(kafka, addresses)
        first = anvil.web3.eth.block_number + 1
        hashes = []
        for i, address in enumerate(addresses):  # spread over ~100 blocks
            hashes += await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDT", 3, address, 1000 + i)]
            )
            await asyncio.to_thread(anvil.mine, 17)
        proxy = RangeLimitingProxy(anvil.rpc_url, max_blocks=10)
        url = await proxy.start()
        try:
            settings = watcher_settings(
                kafka,
                redis_server.url,
                chains,
                rpc_urls=url,
                start_block=first,
                initial_range=64,
                max_range=64,
            )
            async with running(create_app(settings)):
                seen = await read_transfers(
                    kafka, lambda f: len(by_stage(f)["confirmed"]) >= len(hashes)
                )
        finally:
            await proxy.stop()
        assert sorted(t.tx_hash for t in by_stage(seen)["confirmed"]) == sorted(hashes)
        assert proxy.refused > 0
        assert proxy.largest_served <= 10
