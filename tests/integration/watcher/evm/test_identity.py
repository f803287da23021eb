"""Chain identity (issue 11, item 8, watcher part): every RPC endpoint is asked which chain it
serves (EVM ``eth_chainId``) before it is used; one on another chain is refused — never asked
for a head or a range — and with none on the right chain the watcher does not run.

Real nodes: the session's anvil (chain id 31337) and another anvil started with another
``--chain-id`` (a testnet node behind a mainnet watcher, say).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from pago.watcher.core.rpc import WrongChain, redact_url, same_chain
from tests.support.watcher import (
    by_stage,
    chains_file,
    endpoint_counts,
    eventually,
    live_fork,
    new_addresses,
    other_chain,
    pay_each_until_confirmed,
    running,
    watch,
    watcher_settings,
)


def _calls(endpoint: str) -> dict[str, float]:
    """RPC calls sent to ``endpoint``, by method."""
    return endpoint_counts("pago_watcher_rpc_requests", endpoint, "method")


def _wrong(endpoint: str) -> float | None:
    return REGISTRY.get_sample_value(
        "pago_watcher_endpoint_wrong_chain", {"network": "ETHEREUM", "endpoint": endpoint}
    )


class TestChainIdentity:
    async def test_an_endpoint_on_another_chain_is_refused_and_the_right_one_used(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        addresses = new_addresses(anvil, 2)
        await watch(kafka, addresses)
        with other_chain(anvil.chain_id + 1) as stranger:
            settings = watcher_settings(
                kafka,
                redis_server.url,
                chains,
                rpc_urls=f"{stranger},{anvil.rpc_url}",  # the wrong one is the primary
                start_block=anvil.web3.eth.block_number + 1,
            )
            async with running(create_app(settings)) as app:
                hashes, seen = await pay_each_until_confirmed(anvil, kafka, addresses, 70)
                status = app.status()
        assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == set(hashes)
        label = redact_url(stranger)
        assert set(_calls(label)) == {"chain_identity"}, "asked who it is, then never used"
        assert _wrong(label) == 1
        assert _wrong(redact_url(anvil.rpc_url)) == 0
        states = {e["endpoint"]: e for e in status["endpoints"]}  # type: ignore[attr-defined]
        assert states[label]["wrong_chain"] == str(anvil.chain_id + 1)
        assert states[redact_url(anvil.rpc_url)]["wrong_chain"] is None

    async def test_a_failover_target_is_checked_before_it_is_used(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """The second endpoint is down at start (nothing to check), comes back serving another
        chain, and the primary dies: the watcher asks it who it is before any other call and
        refuses it; it waits for a right endpoint rather than scan the wrong chain."""
        kafka = broker.bootstrap_servers
        spare = free_tcp_port()
        spare_url = f"http://127.0.0.1:{spare}"
        with contextlib.ExitStack() as first:
            primary = first.enter_context(live_fork(anvil))
            settings = watcher_settings(
                kafka,
                redis_server.url,
                chains,
                rpc_urls=f"{primary},{spare_url}",
                start_block=anvil.web3.eth.block_number + 1,
                stale_after=1.0,
            )
            async with running(create_app(settings)) as app:
                with other_chain(anvil.chain_id + 7, port=spare):
                    first.close()  # the primary dies; the spare is up, on another chain

                    def refused() -> bool:
                        endpoints = app.status()["endpoints"]
                        states = {e["endpoint"]: e for e in endpoints}  # type: ignore[attr-defined]
                        return states[redact_url(spare_url)]["wrong_chain"] is not None

                    await eventually(refused, what="the failover target to be checked")
                    await eventually(lambda: not app.ready(), what="readiness to fail")
                    assert app.alive(), "it waits for a right endpoint; it does not stop"
        assert set(_calls(redact_url(spare_url))) == {"chain_identity"}
        assert _wrong(redact_url(spare_url)) == 1

    async def test_with_no_endpoint_on_the_configured_chain_the_watcher_does_not_run(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        # The registry says Sepolia's id, say; the node is anvil (31337).
        chains = chains_file(tmp_path / "wrong.toml", anvil, chain_id=11155111)
        settings = watcher_settings(broker.bootstrap_servers, redis_server.url, chains)
        app = create_app(settings)
        with pytest.raises(WrongChain) as refused:
            await app.run()
        assert "11155111" in str(refused.value)
        assert f"serves {anvil.chain_id}" in str(refused.value)
        assert app.scanner is None, "nothing was scanned"


class TestSameChain:
    def test_hex_ignores_case_and_prefix_base58_does_not(self) -> None:
        tron = "00000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc"
        assert same_chain(tron.upper(), tron)
        assert same_chain("0x" + tron, tron)
        solana = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
        assert same_chain(solana, solana)
        assert not same_chain(solana.lower(), solana)
        assert not same_chain("11155111", "1")
