"""A broker that refuses records: the cursor never passes a transfer it has not acknowledged,
and every transfer is published once the broker takes records again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from pago.common.topics import CHAIN_CURSORS, CHAIN_TRANSFERS
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from tests.support.watcher import (
    MODE,
    NETWORK,
    Payment,
    assert_cursor_never_ahead,
    by_stage,
    new_addresses,
    pay_in_one_block,
    read_all,
    read_transfers,
    running,
    watch,
    watcher_settings,
    write_cursor,
)

PRODUCE = 0
"""Kafka API key of Produce requests."""
MESSAGE_TOO_LARGE = 10
"""An error aiokafka does not retry by itself: the watcher sees the failed ack."""


def _publish_failures() -> float:
    return (
        REGISTRY.get_sample_value(
            "pago_watcher_publish_failures_total", {"network": NETWORK, "mode": MODE}
        )
        or 0.0
    )


async def test_refused_records_are_sent_again_and_the_cursor_waits(
    anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
) -> None:
    kafka = broker.bootstrap_servers
    assert broker.cluster is not None
    addresses = new_addresses(anvil, 8)
    await watch(kafka, addresses)
    first = anvil.web3.eth.block_number + 1
    hashes: list[str] = []
    for i, address in enumerate(addresses):
        hashes += await asyncio.to_thread(
            pay_in_one_block, anvil, [Payment("USDT", 1, address, 500 + i)]
        )
        await asyncio.to_thread(anvil.mine, 5)
    failures_before = _publish_failures()
    # Resuming (no first-start cursor write): the first records it produces are transfers,
    # and those are what the broker refuses.
    await write_cursor(kafka, anvil, first - 1)
    broker.cluster.push_request_errors(PRODUCE, [MESSAGE_TOO_LARGE] * 4)
    settings = watcher_settings(
        kafka, redis_server.url, chains, initial_range=4, max_range=4, detect_depth=""
    )
    async with running(create_app(settings)):
        seen = await read_transfers(
            kafka, lambda f: len({t.tx_hash for t in by_stage(f)["confirmed"]}) >= len(hashes)
        )
    assert {t.tx_hash for t in by_stage(seen)["confirmed"]} == set(hashes)
    assert _publish_failures() > failures_before, "the refusals reached the watcher"
    assert_cursor_never_ahead(
        await read_all(kafka, CHAIN_TRANSFERS), await read_all(kafka, CHAIN_CURSORS)
    )
