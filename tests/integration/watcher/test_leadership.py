"""Two replicas of one watcher: one scans, the other stands by and takes over.

The leader is SIGKILLed: with the production lease settings (10 s TTL, 2 s retry) the standby
takes over once the lease lapses, publishes what was paid meanwhile, and never writes a
cursor behind the dead leader's. A SIGTERMed leader finishes, writes its cursor, exits 0 and
releases the lease, so its standby takes over at once instead of after the TTL: the lease key
is gone the moment the leader has exited. How long a takeover takes is not asserted here (the
machine's load decides it); the waits below only bound how long a failing test hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pago.common.enums import TransferStage
from pago.common.events import CursorCommitted
from pago.common.redis import create_redis
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from tests.support.processes import WatcherProcess
from tests.support.watcher import (
    MODE,
    NETWORK,
    Payment,
    by_stage,
    new_addresses,
    pay_in_one_block,
    read_cursors,
    read_transfers,
    watch,
)

TAKEOVER_WAIT = 60.0
"""How long a test waits for a takeover before it fails (a deadline, not a measured limit)."""
LEADING = "leading: this replica scans now"


def _story(*replicas: WatcherProcess) -> str:
    """Each replica's log lines (time, message, a few fields), for a failure message."""
    lines = []
    for name, replica in zip("AB", replicas, strict=False):
        for e in replica.logs:
            extra = {k: v for k, v in e.items() if k not in ("ts", "level", "service", "logger")}
            lines.append(f"{e.get('ts', '')[11:23]} {name} {extra}"[:300])
    return "\n".join(sorted(lines))


async def _cursors_reaching(
    kafka: str, block: int, timeout: float = 15.0
) -> list[tuple[CursorCommitted, int]]:
    deadline = time.monotonic() + timeout
    while True:
        cursors = await read_cursors(kafka)
        if any(c.block_number >= block for c, _ in cursors):
            return cursors
        assert time.monotonic() < deadline, f"no cursor record reached block {block}: {cursors}"
        await asyncio.sleep(0.1)


def _pair(
    kafka: str, redis_url: str, chains: Path, **settings: str
) -> tuple[WatcherProcess, WatcherProcess]:
    """Two replicas started at once (start-up is the slow part); the lease picks the leader.
    Returns (leader, standby)."""
    a = WatcherProcess(kafka, redis_url, chains, **settings)
    b = WatcherProcess(kafka, redis_url, chains, **settings)
    try:
        for replica in (a, b):
            replica.started()
        deadline = time.monotonic() + 20
        while not (a.find(LEADING) or b.find(LEADING)):
            assert time.monotonic() < deadline, (a.logs[-5:], b.logs[-5:])
            time.sleep(0.02)
        leader, standby = (a, b) if a.find(LEADING) else (b, a)
        standby.until(lambda s: s["role"] == "standby")
    except BaseException:
        a.close()
        b.close()
        raise
    return leader, standby


@pytest.fixture(autouse=True)
async def _no_lease_left_behind(redis_server: RedisServer) -> AsyncIterator[None]:
    """A replica killed at the end of a test leaves its lease to lapse (60 s here): the next
    watcher of this network × mode on the run's Redis would stand by until then."""
    yield
    redis: Redis = create_redis(redis_server.url)
    try:
        await redis.delete(f"pago:watcher:lease:{NETWORK}:{MODE}")
    finally:
        await redis.aclose()


def _confirmed(tx: str):  # type: ignore[no-untyped-def]
    return lambda found: any(t.tx_hash == tx and t.stage is TransferStage.CONFIRMED for t in found)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_the_standby_takes_over_after_the_leaders_death(
    anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    before, during = new_addresses(anvil, 2)
    await watch(kafka, [before, during])
    start = str(anvil.web3.eth.block_number + 1)
    leader, standby = _pair(kafka, redis_server.url, chains, PAGO_WATCHER_START_BLOCK=start)
    try:
        assert standby.status()["watch_set"] == 2, "a standby keeps its watch set warm"
        assert standby.find(LEADING) is None
        (tx1,) = pay_in_one_block(anvil, [Payment("USDT", 1, before, 10)])
        anvil.mine(3)
        await read_transfers(kafka, _confirmed(tx1))
        leader_cursor = leader.status()["cursor"]

        leader.kill()
        (tx2,) = pay_in_one_block(anvil, [Payment("USDT", 1, during, 20)])
        anvil.mine(3)
        standby.wait_log(LEADING, timeout=TAKEOVER_WAIT)
        seen = await read_transfers(kafka, _confirmed(tx2), timeout=TAKEOVER_WAIT)
        # The new term's cursor record follows the acks of tx2's range (the commit loop):
        # wait for it, while the new leader still runs.
        (tx2_block,) = {t.block_number for t in seen if t.tx_hash == tx2}
        cursors = await _cursors_reaching(kafka, tx2_block)
    finally:
        leader.close()
        standby.close()

    assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == {tx1, tx2}
    fences = [fence for _, fence in cursors]
    assert fences == sorted(fences), "each term writes above every earlier one"
    assert len(set(fences)) == 2, _story(leader, standby)
    new_term = [c.block_number for c, fence in cursors if fence == fences[-1]]
    assert min(new_term) >= leader_cursor, "never behind what the dead leader had published"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_finishes_writes_the_cursor_and_hands_over_at_once(
    anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    (address,) = new_addresses(anvil, 1)
    await watch(kafka, [address])
    # A lease TTL far beyond the handover we expect: only a release explains a fast takeover.
    # Cursor records at most every 60 s: the one after the transfer can only be the final one.
    leader, standby = _pair(
        kafka,
        redis_server.url,
        chains,
        PAGO_WATCHER_START_BLOCK=str(anvil.web3.eth.block_number + 1),
        PAGO_WATCHER_LEASE_TTL="60",
        PAGO_WATCHER_LEASE_RENEW="3",
        PAGO_WATCHER_LEASE_RETRY="0.5",
        PAGO_WATCHER_CURSOR_INTERVAL="60",
    )
    try:
        (tx,) = pay_in_one_block(anvil, [Payment("USDC", 2, address, 5)])
        anvil.mine(3)
        await read_transfers(kafka, _confirmed(tx))
        leader.until(lambda s: s["cursor"] is not None and s["cursor"] >= s["confirmable"])
        final = leader.status()["cursor"]

        leader_instance = str(leader.status()["instance"])
        assert leader.terminate() == 0
        # Released, not left to lapse: with a 60 s TTL an unreleased lease would still name
        # the exited leader now.
        holder = await _lease_holder(redis_server.url)
        assert holder is None or not holder.startswith(f"{leader_instance}:"), holder
        standby.wait_log(LEADING, timeout=TAKEOVER_WAIT)
    finally:
        leader.close()
        standby.close()
    assert leader.find("watcher stopped") is not None
    last, _ = (await read_cursors(kafka))[-1]
    assert last.block_number >= final, "the graceful stop wrote the cursor"


async def _lease_holder(redis_url: str) -> str | None:
    """``<instance>:<fence>`` of the replica holding the lease, or ``None``."""
    redis: Redis = create_redis(redis_url)
    try:
        value = await redis.get(f"pago:watcher:lease:{NETWORK}:{MODE}")
    finally:
        await redis.aclose()
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)
