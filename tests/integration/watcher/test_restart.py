"""SIGKILL the watcher in the middle of a long scan, start it again: it resumes at the cursor.

Nothing is skipped, and duplicates are allowed only for the un-checkpointed tail: a transfer
in a block at or below the last cursor written before the kill is published exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from pago.common.enums import TransferStage
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from tests.support.processes import WatcherProcess
from tests.support.watcher import (
    Payment,
    by_stage,
    identity,
    new_addresses,
    pay_in_one_block,
    read_cursors,
    read_transfers,
    watch,
)

PAYMENTS = 40
GAP = 20
"""Empty blocks between two payments: 40 payments over ~840 blocks."""


@pytest.mark.slow
async def test_a_restart_mid_range_resumes_at_the_cursor(
    anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    addresses = new_addresses(anvil, PAYMENTS)
    await watch(kafka, addresses)
    first = anvil.web3.eth.block_number + 1
    hashes: list[str] = []
    for i, address in enumerate(addresses):
        hashes += pay_in_one_block(anvil, [Payment("USDT", 1 + i % 3, address, 1_000 + i)])
        anvil.mine(GAP)
    last_payment_block = anvil.web3.eth.block_number - GAP
    # Small ranges, one at a time: ~80 ranges, so a kill lands in the middle of the scan.
    slow = {
        "PAGO_WATCHER_START_BLOCK": str(first),
        "PAGO_WATCHER_MAX_RANGE": "10",
        "PAGO_WATCHER_INITIAL_RANGE": "10",
        "PAGO_WATCHER_CONCURRENCY": "1",
        "PAGO_WATCHER_LEADERSHIP": "none",
    }
    one = WatcherProcess(kafka, redis_server.url, chains, **slow)
    try:
        one.started()
        while True:
            cursors = await read_cursors(kafka)
            if cursors and cursors[-1][0].block_number >= first + 250:
                break
            assert one.proc.poll() is None, one.logs[-10:]
            await asyncio.sleep(0.02)
        one.kill()
    finally:
        one.close()
    before = await read_cursors(kafka)
    checkpoint = before[-1][0].block_number
    assert checkpoint < last_payment_block, "killed before the scan was done"
    published_before = await read_transfers(kafka, lambda f: True, timeout=1)

    two = WatcherProcess(kafka, redis_server.url, chains, **slow)
    try:
        two.started()
        resumed = two.wait_log("resuming from the cursor")
        seen = await read_transfers(
            kafka, lambda f: len({t.tx_hash for t in by_stage(f)["confirmed"]}) >= PAYMENTS
        )
    finally:
        two.close()

    assert resumed["cursor"] == checkpoint, "the restart starts right after the last checkpoint"
    confirmed = by_stage(seen)["confirmed"]
    assert {t.tx_hash for t in confirmed} == set(hashes), "nothing skipped"
    counts = Counter(identity(t) for t in confirmed)
    for t in confirmed:
        if t.block_number <= checkpoint:
            assert counts[identity(t)] == 1, f"block {t.block_number} was checkpointed"
    assert len(published_before) < len(seen)
    numbers = [c.block_number for c, _ in await read_cursors(kafka)]
    assert numbers == sorted(numbers), "the cursor never moved backwards"
    assert all(t.stage is not TransferStage.REVERTED for t in seen)
