"""``ChainScanned`` progress markers (issue 11, item 2): after the broker acked every transfer
up to block N, one marker per ``chain.transfers`` partition names N, its hash and its time — so
the matcher can prove the chain silent for a session, even when nothing is watched or paid.

What is pinned down, on a real anvil and a real broker: a round covers every partition of the
topic (explicit partition, key ``{network}:{mode}``, headers ``v`` and ``event_type``); its block
time is the block's own timestamp; no marker in a partition precedes a confirmed transfer it
covers; rounds come with no address watched at all.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import ConsumerRecord

from pago.common.enums import TransferStage
from pago.common.events import ChainScanned, TransferObserved
from pago.common.topics import CHAIN_TRANSFERS, TOPICS
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from pago.watcher.settings import WatcherSettings
from tests.support.kafka import read_topic
from tests.support.watcher import (
    NETWORK,
    Payment,
    cursor_reached,
    event_type,
    eventually,
    markers_of,
    new_addresses,
    pay_in_one_block,
    read_all,
    running,
    watch,
    watcher_settings,
)

PARTITIONS = next(t.partitions for t in TOPICS if t.name == CHAIN_TRANSFERS)


async def _markers_until(kafka: str, block: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``chain.transfers`` read until every partition holds a marker at ``block``
    or beyond."""

    def covered(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        reached = {m.partition for m in markers_of(records) if m.block_number >= block}
        return len(reached) == PARTITIONS

    return await read_topic(kafka, CHAIN_TRANSFERS, until=covered, timeout=30)


def _settings(
    anvil: Anvil, kafka: str, redis_server: RedisServer, chains: Path, interval: float = 0.0
) -> WatcherSettings:
    """A watcher from anvil's next block on, a marker round at most every ``interval`` s."""
    return watcher_settings(
        kafka,
        redis_server.url,
        chains,
        start_block=anvil.web3.eth.block_number + 1,
        progress_interval=interval,
    )


def _block(anvil: Anvil, number: int) -> tuple[str, datetime]:
    block = anvil.web3.eth.get_block(number)
    return block["hash"].to_0x_hex(), datetime.fromtimestamp(block["timestamp"], UTC)


class TestProgressMarkers:
    async def test_every_partition_gets_a_marker_after_the_transfers_it_covers(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        addresses = new_addresses(anvil, 6)
        await watch(kafka, addresses)
        settings = _settings(anvil, kafka, redis_server, chains)
        async with running(create_app(settings)):
            payments = [Payment("USDT", 1 + i % 3, a, 1_000 + i) for i, a in enumerate(addresses)]
            hashes = await asyncio.to_thread(pay_in_one_block, anvil, payments)
            paid_in = anvil.web3.eth.get_transaction_receipt(hashes[0])["blockNumber"]  # type: ignore[arg-type]
            await asyncio.to_thread(anvil.mine, 3)
            await _markers_until(kafka, paid_in)
        records = await read_all(kafka, CHAIN_TRANSFERS)

        by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        assert set(by_partition) == set(range(PARTITIONS)), "a round reaches every partition"
        confirmed_seen = 0
        for partition, items in by_partition.items():
            marked: list[ChainScanned] = []
            for record in items:
                headers = dict(record.headers)
                assert headers["v"] == b"1"
                if event_type(record) == "ChainScanned":
                    marker = ChainScanned.model_validate_json(record.value)
                    assert record.key == f"{NETWORK}:test".encode()
                    assert (marker.partition, marker.partitions) == (partition, PARTITIONS)
                    assert (marker.block_hash, marker.block_time) == _block(
                        anvil, marker.block_number
                    ), "the cursor block's own hash and timestamp"
                    marked.append(marker)
                    continue
                assert event_type(record) == "TransferObserved"
                transfer = TransferObserved.model_validate_json(record.value)
                if transfer.stage is TransferStage.CONFIRMED:
                    confirmed_seen += 1
                    # Nothing earlier than acked transfers: no marker before it in its partition
                    # may claim its block.
                    assert all(m.block_number < transfer.block_number for m in marked), (
                        f"a marker covering block {transfer.block_number} preceded its transfer"
                    )
            numbers = [m.block_number for m in marked]
            assert numbers == sorted(numbers), "progress only moves forward"
            assert numbers[-1] >= paid_in
        assert confirmed_seen == len(payments)

    async def test_rounds_come_with_nothing_watched(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """The matcher must be able to expire a session on a chain where nothing happens."""
        kafka = broker.bootstrap_servers
        settings = _settings(anvil, kafka, redis_server, chains)
        async with running(create_app(settings)) as app:
            await asyncio.to_thread(anvil.mine, 4)
            target = anvil.web3.eth.block_number - 2  # confirmable at 2 confirmations
            assert app.scanner is not None
            await eventually(lambda: cursor_reached(app, target))
            records = await _markers_until(kafka, target)
        assert all(event_type(r) == "ChainScanned" for r in records)
        newest = max(markers_of(records), key=lambda m: m.block_number)
        assert (newest.block_hash, newest.block_time) == _block(anvil, newest.block_number)

    async def test_rounds_are_throttled_but_the_newest_progress_is_never_held_back(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """Blocks every ~0.1 s, rounds at most one per interval (spaced by it, by their own
        ``scanned_at``), and the last one still reaches the last cursor."""
        kafka = broker.bootstrap_servers
        interval = 0.5
        settings = _settings(anvil, kafka, redis_server, chains, interval=interval)
        async with running(create_app(settings)) as app:
            for _ in range(20):
                await asyncio.to_thread(anvil.mine, 1)
                await asyncio.sleep(0.1)
            target = anvil.web3.eth.block_number - 2
            assert app.scanner is not None
            await eventually(lambda: cursor_reached(app, target))
            # No more blocks: the move that the throttle held must still get its round.
            records = await _markers_until(kafka, target)
        rounds = sorted(
            {(m.block_number, m.scanned_at) for m in markers_of(records)}, key=lambda r: r[1]
        )
        gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(rounds)]
        assert all(gap >= interval * 0.9 for gap in gaps), gaps

    async def test_only_the_leader_writes_them(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """Two replicas on one lease: the standby writes no marker while the leader leads, and
        takes over the rounds (with its higher fence) once the leader stops."""
        kafka = broker.bootstrap_servers
        settings = _settings(anvil, kafka, redis_server, chains)
        first, second = create_app(settings), create_app(settings)
        async with running(first), running(second):
            await eventually(lambda: {first.role, second.role} == {"leader", "standby"})
            leader, standby = (first, second) if first.role == "leader" else (second, first)
            await asyncio.to_thread(anvil.mine, 4)
            await _markers_until(kafka, anvil.web3.eth.block_number - 2)
            term = leader.lease.fence
            assert standby.scanner is None, "a standby never scanned"
            leader.request_stop()
            await eventually(lambda: standby.role == "leader", what="the takeover")
            await asyncio.to_thread(anvil.mine, 4)
            records = await _markers_until(kafka, anvil.web3.eth.block_number - 2)
        fences: dict[int, list[int]] = defaultdict(list)
        for record in records:
            if event_type(record) == "ChainScanned":
                fences[record.partition].append(int(dict(record.headers)["pago-fence"]))
        assert set(fences) == set(range(PARTITIONS))
        for partition, seen in fences.items():
            assert seen == sorted(seen), f"partition {partition}: terms interleave {seen}"
            assert seen[0] == term
            assert seen[-1] == standby.lease.fence > term
