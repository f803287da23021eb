"""SOLANA: an endpoint's cluster is its ``getGenesisHash`` (issue 11, item 8). A node of another
cluster (devnet behind a mainnet watcher, say) is refused; with none on the configured cluster
the watcher does not run. Transfers carry their block's time (Surfpool's ``getBlock`` reports
it a thousand times too small; the watcher asks ``getBlockTime`` then)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.devstack.surfpool import Surfpool
from pago.watcher.app import create_app
from pago.watcher.core.rpc import WrongChain
from tests.support.watcher import by_stage, read_transfers, running
from tests.support.watcher_solana import (
    TOKEN,
    chains_file,
    owners,
    pay,
    rpc,
    solana_settings,
    watch,
)

DEVNET = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"


async def test_with_no_node_on_the_configured_cluster_the_watcher_does_not_run(
    surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    chains = chains_file(tmp_path / "chains.toml", surfpool, genesis=DEVNET)
    app = create_app(solana_settings(broker.bootstrap_servers, redis_server.url, chains))
    with pytest.raises(WrongChain, match=f"serves {surfpool.genesis_hash}"):
        await app.run()


async def test_the_right_cluster_is_used_and_transfers_carry_their_block_time(
    surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    (owner,) = owners(1)
    await watch(kafka, [str(owner.pubkey())])
    async with running(create_app(solana_settings(kafka, redis_server.url, chains))):
        sig = await pay(surfpool, "USDT", owner, 4 * TOKEN)
        seen = await read_transfers(
            kafka, lambda f: any(t.tx_hash == sig for t in by_stage(f)["confirmed"])
        )
    (found,) = by_stage(seen)["confirmed"]
    stamp = rpc(surfpool, "getBlockTime", [found.block_number])
    assert found.block_time == datetime.fromtimestamp(stamp, UTC)
    assert abs((datetime.now(UTC) - found.block_time).total_seconds()) < 3600, "wall clock"
