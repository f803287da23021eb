"""Back-fill from the session's creation (issue 11, item 4), at the watcher's boundary.

A ``WatchAddress`` that reaches the watcher after the scan has moved more than 1,000 blocks
past its payment (the old fixed window) is looked up from the block at its ``created_at``;
one from an older api (no ``created_at``) keeps the old window. Real anvil, real broker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY

from pago.common.enums import TransferStage
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from pago.watcher.core.timeline import block_at
from tests.support.watcher import (
    Payment,
    eventually,
    new_addresses,
    pay_in_one_block,
    read_transfers,
    running,
    watch,
    watcher_settings,
)

OLD_WINDOW = 1000


def _backfill_from() -> float | None:
    return REGISTRY.get_sample_value(
        "pago_watcher_backfill_from_block", {"network": "ETHEREUM", "mode": "test"}
    )


class TestLateAddress:
    async def test_a_late_address_is_looked_up_from_its_sessions_creation(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        fresh, legacy = new_addresses(anvil, 2)
        created = datetime.now(UTC) - timedelta(seconds=1)
        settings = watcher_settings(
            kafka, redis_server.url, chains, start_block=anvil.web3.eth.block_number + 1
        )
        async with running(create_app(settings)) as app:
            scanner = app.scanner
            assert scanner is not None
            payments = [Payment("USDT", 1, fresh, 11), Payment("USDT", 1, legacy, 12)]
            tx_fresh, tx_legacy = await asyncio.to_thread(pay_in_one_block, anvil, payments)
            paid_in = anvil.web3.eth.get_transaction_receipt(tx_fresh)["blockNumber"]  # type: ignore[arg-type]
            await asyncio.to_thread(anvil.mine, OLD_WINDOW + 100)
            head = anvil.web3.eth.block_number
            await eventually(
                lambda: scanner.cursor is not None and scanner.cursor.number >= head - 2,
                timeout=60,
                what="the scan to pass the payment by more than the old window",
            )
            # An api older than created_at: the fixed window, which no longer reaches it.
            await watch(kafka, [legacy])
            await eventually(lambda: len(app.follower.watch_set) == 1)
            await eventually(lambda: not scanner.status()["late_addresses"])
            await watch(kafka, [fresh], created_at=created)
            seen = await read_transfers(kafka, lambda f: any(t.tx_hash == tx_fresh for t in f))
            await eventually(lambda: not scanner.status()["late_addresses"])
        assert paid_in < head - 2 - OLD_WINDOW
        (found,) = [t for t in seen if t.tx_hash == tx_fresh]
        assert (found.stage, found.amount_raw, found.to_address) == (
            TransferStage.CONFIRMED,
            11,
            fresh,
        )
        assert found.block_time is not None
        assert found.block_time >= created - timedelta(minutes=2)
        assert all(t.tx_hash != tx_legacy for t in seen), "no created_at: today's window only"
        low = _backfill_from()
        assert low is not None
        assert low <= paid_in


class TestBlockAtTime:
    async def test_finds_the_newest_block_at_or_before_a_moment_in_few_calls(
        self, anvil: Anvil
    ) -> None:
        if anvil.web3.eth.block_number < 300:
            await asyncio.to_thread(anvil.mine, 300)
        head = anvil.web3.eth.block_number
        floor = head - 300
        times = {
            n: datetime.fromtimestamp(anvil.web3.eth.get_block(n)["timestamp"], UTC)
            for n in range(floor, head + 1)
        }
        calls = 0

        async def time_of(n: int) -> datetime:
            nonlocal calls
            calls += 1
            return times[n]

        for target in (floor, floor + 1, head - 150, head - 7, head - 1, head):
            calls = 0
            when = times[target]
            found = await block_at(when, head, time_of, floor=floor)
            # The newest block at that time (several blocks may share a second).
            assert times[found] <= when
            assert found == head or times[found + 1] > when
            assert calls <= 2 * (head - floor).bit_length() + 2
        early = times[floor] - timedelta(days=1)
        assert await block_at(early, head, time_of, floor=floor) == floor
