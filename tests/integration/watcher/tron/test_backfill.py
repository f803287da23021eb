"""TRON: an address that reaches the watcher after the scan passed its payment by more than the
old 1,000-block window is looked up from the block at its session's creation (issue 11, item 4),
found by bisecting block timestamps on the node's HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pago.common.enums import TransferStage
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from tests.support.tron_node import TronChain, TronNode, key_of
from tests.support.watcher import eventually, read_transfers, running
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    USDT,
    USDT_KEY,
    new_addresses,
    tron_settings,
    watch,
)

OLD_WINDOW = 1000


async def test_a_late_address_is_looked_up_from_its_sessions_creation(
    chain: TronChain,
    node: TronNode,
    broker: KafkaServer,
    redis_server: RedisServer,
    chains: Path,
) -> None:
    kafka = broker.bootstrap_servers
    (late,) = new_addresses(1)
    settings = tron_settings(
        kafka, redis_server.url, chains, start_block=chain.head.number + 1, max_range=2000
    )
    async with running(create_app(settings)) as app:
        scanner = app.scanner
        assert scanner is not None
        # The session exists (chain time) a few blocks before its payment.
        created = datetime.fromtimestamp(chain.head.timestamp / 1000, UTC) + timedelta(seconds=1)
        chain.mine(3, noise=0)
        tx = chain.trc20_transfer(USDT_KEY, key_of(late), 3 * USDT)
        (paid,) = chain.mine(1, noise=0)
        chain.mine(OLD_WINDOW + CONFIRMATIONS + 50, noise=0)
        target = chain.head.number - CONFIRMATIONS
        await eventually(
            lambda: scanner.cursor is not None and scanner.cursor.number >= target,
            timeout=60,
            what="the scan to pass the payment by more than the old window",
        )
        assert target - paid.number > OLD_WINDOW
        await watch(kafka, [late], created_at=created)
        seen = await read_transfers(kafka, lambda f: any(t.tx_hash == tx.txid for t in f))
    (found,) = seen
    assert (found.stage, found.amount_raw, found.block_number) == (
        TransferStage.CONFIRMED,
        3 * USDT,
        paid.number,
    )
    assert found.block_time == datetime.fromtimestamp(paid.timestamp / 1000, UTC)
