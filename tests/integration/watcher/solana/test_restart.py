"""SIGKILL the SOLANA watcher process, pay while it is down, start it again: it resumes at its
cursor and confirms everything — what it had only detected, and what it never saw.

Duplicates are allowed only for the un-checkpointed tail: a transfer in a slot at or below the
last cursor written before the kill is published ``confirmed`` exactly once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pago.common.events import TransferObserved
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.devstack.surfpool import Surfpool
from tests.support.watcher import by_stage, identity, read_cursors, read_transfers
from tests.support.watcher_solana import (
    SolanaWatcherProcess,
    owners,
    pay,
    watch,
)

pytestmark = pytest.mark.slow


def _confirmed(found: list[TransferObserved]) -> set[str]:
    return {t.tx_hash for t in by_stage(found)["confirmed"]}


async def test_a_killed_watcher_resumes_at_its_cursor_without_loss(
    surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    session = owners(6)
    await watch(kafka, [str(o.pubkey()) for o in session])

    one = SolanaWatcherProcess(kafka, redis_server.url, chains)
    try:
        one.wait_log("leading: this replica scans now")
        early = [await pay(surfpool, "USDT", session[i], 1_000 + i) for i in range(2)]
        await read_transfers(kafka, lambda f: _confirmed(f) >= set(early))
        # Detected, and killed before its slot is finalized (~2 s on Surfpool).
        pending = await pay(surfpool, "USDC", session[2], 1_500)
        await read_transfers(kafka, lambda f: pending in {t.tx_hash for t in f})
        one.kill()
    finally:
        one.close()
    checkpoint = (await read_cursors(kafka))[-1][0].block_number
    before = await read_transfers(kafka, lambda f: True, timeout=1)
    assert pending not in _confirmed(before), "killed before its confirmation"

    down = [await pay(surfpool, "USDC", session[3 + i], 2_000 + i) for i in range(3)]
    two = SolanaWatcherProcess(kafka, redis_server.url, chains)
    try:
        resumed = two.wait_log("resuming from the cursor")
        wanted = {*early, pending, *down}
        seen = await read_transfers(kafka, lambda f: _confirmed(f) >= wanted, timeout=30)
    finally:
        two.close()

    assert resumed["cursor"] == checkpoint, "the restart starts right after the last checkpoint"
    confirmed = by_stage(seen)["confirmed"]
    assert {t.tx_hash for t in confirmed} == wanted, "nothing skipped, nothing else"
    counts = Counter(identity(t) for t in confirmed)
    for t in confirmed:
        if t.block_number <= checkpoint:
            assert counts[identity(t)] == 1, f"slot {t.block_number} was checkpointed"
    assert sorted({t.amount_raw for t in confirmed}) == [1_000, 1_001, 1_500, 2_000, 2_001, 2_002]
    cursors = [c.block_number for c, _ in await read_cursors(kafka)]
    assert cursors == sorted(cursors), "the cursor never moved backwards"
    assert by_stage(seen)["reverted"] == []
