"""``pago-watcher --network TRON`` as a process: SIGKILLed in the middle of a catch-up and started
again, it resumes right after its last cursor; nothing is skipped, and only the un-checkpointed
tail may be published twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from tests.support.processes import WatcherProcess
from tests.support.tron_node import TronChain, key_of
from tests.support.watcher import by_stage, identity, read_cursors, read_transfers
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    NETWORK,
    USDT_KEY,
    new_addresses,
    watch,
)

PAYMENTS = 30
GAP = 12
"""Blocks between two payments: 30 payments over ~390 blocks."""


@pytest.mark.slow
async def test_a_killed_watcher_resumes_at_its_cursor(
    chain: TronChain, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    addresses = new_addresses(PAYMENTS)
    await watch(kafka, addresses)
    first = chain.head.number + 1
    txids = []
    for i, address in enumerate(addresses):
        txids.append(chain.trc20_transfer(USDT_KEY, key_of(address), 1_000 + i).txid)
        chain.mine(GAP)
    chain.mine(CONFIRMATIONS)
    # Small ranges, one at a time: ~40 ranges, so the kill lands in the middle of the scan.
    slow = {
        "PAGO_WATCHER_START_BLOCK": str(first),
        "PAGO_WATCHER_MAX_RANGE": "10",
        "PAGO_WATCHER_INITIAL_RANGE": "10",
        "PAGO_WATCHER_CONCURRENCY": "1",
        "PAGO_WATCHER_LEADERSHIP": "none",
    }
    one = WatcherProcess(kafka, redis_server.url, chains, network=NETWORK, **slow)
    try:
        await one.wait_log_async("watcher started")
        while True:
            cursors = await read_cursors(kafka)
            if cursors and cursors[-1][0].block_number >= first + 150:
                break
            assert one.proc.poll() is None, one.logs[-10:]
            await asyncio.sleep(0.02)
        one.kill()
    finally:
        one.close()
    checkpoint = (await read_cursors(kafka))[-1][0].block_number
    assert checkpoint < first + PAYMENTS * GAP, "killed before the scan was done"

    two = WatcherProcess(kafka, redis_server.url, chains, network=NETWORK, **slow)
    try:
        resumed = await two.wait_log_async("resuming from the cursor")
        seen = await read_transfers(
            kafka, lambda f: len({t.tx_hash for t in by_stage(f)["confirmed"]}) >= PAYMENTS
        )
    finally:
        two.close()

    assert resumed["cursor"] == checkpoint, "the restart starts right after the last checkpoint"
    confirmed = by_stage(seen)["confirmed"]
    assert {t.tx_hash for t in confirmed} == set(txids), "nothing skipped"
    counts = Counter(identity(t) for t in confirmed)
    for t in confirmed:
        if t.block_number <= checkpoint:
            assert counts[identity(t)] == 1, f"block {t.block_number} was checkpointed"
    numbers = [c.block_number for c, _ in await read_cursors(kafka)]
    assert numbers == sorted(numbers), "the cursor never moved backwards"
    assert [c.block_hash for c, _ in await read_cursors(kafka)][-1] == chain.blocks[numbers[-1]].id
