"""A TRON fork on the local node: the watcher notices it by block hashes (nodes announce nothing),
publishes ``reverted`` for the transfer the new branch dropped, and confirms, exactly once,
the one the new branch carried over — wherever it landed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from pago.common.enums import TransferStage
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from tests.support.tron_node import TronChain, key_of
from tests.support.watcher import by_stage, dump, identity, read_transfers, running
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    MODE,
    NETWORK,
    USDT_KEY,
    new_addresses,
    tron_settings,
    watch,
)


def _reorgs() -> float:
    sample = REGISTRY.get_sample_value(
        "pago_watcher_reorgs_total", {"network": NETWORK, "mode": MODE}
    )
    return sample or 0.0


async def test_a_fork_that_drops_a_detected_transfer_publishes_reverted(
    chain: TronChain, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    gone_to, stays_to = new_addresses(2)
    await watch(kafka, [gone_to, stays_to])
    reorgs_before = _reorgs()
    settings = tron_settings(kafka, redis_server.url, chains, start_block=chain.head.number + 1)
    async with running(create_app(settings)):
        gone = chain.trc20_transfer(USDT_KEY, key_of(gone_to), 11)
        stays = chain.trc20_transfer(USDT_KEY, key_of(stays_to), 12)
        (block,) = chain.mine(1)
        chain.mine(1)
        both = {gone.txid, stays.txid}
        detected = await read_transfers(kafka, lambda f: both <= {t.tx_hash for t in f})
        (was,) = [t for t in detected if t.tx_hash == gone.txid]
        assert was.stage is TransferStage.DETECTED

        # The payments' block and the one on top lose to a 3-block branch without ``gone``.
        replaced = chain.fork(2, drop=[gone.txid])
        assert replaced[0].id == block.id != chain.blocks[block.number].id
        chain.mine(CONFIRMATIONS)

        def settled(found: list[object]) -> bool:
            pairs = {(t.tx_hash, t.stage) for t in found}  # type: ignore[attr-defined]
            return {
                (gone.txid, TransferStage.REVERTED),
                (stays.txid, TransferStage.CONFIRMED),
            } <= pairs

        seen = await read_transfers(kafka, settled)  # type: ignore[arg-type]

    gone_events = [t for t in seen if t.tx_hash == gone.txid]
    assert [t.stage for t in gone_events] == [TransferStage.DETECTED, TransferStage.REVERTED]
    reverted = gone_events[1]
    assert (reverted.block_hash, reverted.amount_raw, reverted.to_address, reverted.log_index) == (
        was.block_hash,
        11,
        gone_to,
        was.log_index,
    ), "reverted names the transfer exactly as it was detected"
    (confirmed,) = [t for t in by_stage(seen)["confirmed"] if t.tx_hash == stays.txid]
    now = chain.locate(stays.txid)
    assert now is not None
    assert (confirmed.block_number, confirmed.block_hash) == (now[0].number, now[0].id)
    # Its position in the new block may differ, so may its identity: the old one is then
    # reverted, never confirmed; whatever is confirmed is on the chain as it is now.
    for t in seen:
        if t.tx_hash == stays.txid and t.stage is TransferStage.REVERTED:
            assert identity(t) != identity(confirmed), dump(seen)
    assert _reorgs() > reorgs_before, dump(seen)
