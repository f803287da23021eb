"""The watch-list reader against the real broker: a record it cannot use is dead-lettered with
its reason and never stops the watch set from building; an added field is read as before."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from pago.common.deadletter import H_CONSUMER, H_REASON, DeadLetterWriter
from pago.common.enums import Mode, Network
from pago.common.events import WatchAddress
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key
from pago.devstack.kafka_mock import KafkaServer
from pago.watcher.core.watch_set import WatchSet
from pago.watcher.core.watchlist import WatchlistFollower
from tests.support.kafka import dead_letters, header_value
from tests.support.watcher import eventually

NETWORK, MODE = Network.BASE, Mode.LIVE
CONSUMER = "pago-watcher-base-live-test"
HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def address_key(address: str) -> bytes:
    if not HEX40.fullmatch(address):
        raise ValueError(f"not an EVM address: {address!r}")
    return bytes.fromhex(address[2:])


def watch(address: str, **over: object) -> WatchAddress:
    values: dict[str, object] = {
        "network": NETWORK,
        "mode": MODE,
        "address": address,
        "session_id": "cs_watchlist_test",
        "watch_until": datetime.now(UTC) + timedelta(hours=1),
        **over,
    }
    return WatchAddress.model_validate(values)


@pytest.fixture
async def producer(broker: KafkaServer) -> AsyncIterator[AIOKafkaProducer]:
    client = create_producer(broker.bootstrap_servers, client_id="watchlist-tests")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def put(producer: AIOKafkaProducer, address: str, value: bytes | None) -> RecordMetadata:
    key = watchlist_key(NETWORK.value, MODE.value, address).encode()
    return await (await producer.send(CHAIN_WATCHLIST, value, key=key))


@contextlib.asynccontextmanager
async def following(
    kafka: KafkaServer, producer: AIOKafkaProducer
) -> AsyncIterator[WatchlistFollower]:
    follower = WatchlistFollower(
        kafka.bootstrap_servers,
        NETWORK,
        MODE,
        WatchSet(20),
        address_key,
        deadletters=DeadLetterWriter(producer, CONSUMER),
    )
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        follower.stop()
        await asyncio.wait_for(task, timeout=10)


async def reason_of(kafka: KafkaServer, meta: RecordMetadata) -> str | None:
    letters = await dead_letters(
        kafka.bootstrap_servers, topic=CHAIN_WATCHLIST, partition=meta.partition, offset=meta.offset
    )
    assert {header_value(x, H_CONSUMER) for x in letters} == {CONSUMER}
    return header_value(letters[-1], H_REASON)


async def test_bad_records_are_dead_lettered_and_the_watch_set_still_builds(
    broker: KafkaServer, producer: AIOKafkaProducer, run_id: str
) -> None:
    kafka = broker
    good, added, later = (f"0x{run_id}{i:030x}" for i in range(3))
    garbage = await put(producer, "0xgarbage" + run_id, b"{not json")
    too_new = await put(
        producer, f"0x{run_id}{9:030x}", watch(f"0x{run_id}{9:030x}", v=2).to_bytes()
    )
    elsewhere = await put(
        producer,
        f"0x{run_id}{8:030x}",
        watch(f"0x{run_id}{8:030x}", network=Network.BSC).to_bytes(),
    )
    bad_address = await put(producer, "nonsense" + run_id, watch("nonsense" + run_id).to_bytes())
    await put(producer, good, watch(good).to_bytes())
    body = json.loads(watch(added).to_bytes())
    body["label"] = "a field of a newer api"
    await put(producer, added, json.dumps(body).encode())

    async with following(kafka, producer) as follower:
        await asyncio.wait_for(follower.loaded.wait(), timeout=20)
        assert address_key(good) in follower.watch_set
        assert address_key(added) in follower.watch_set
        assert await reason_of(kafka, garbage) == "undecodable"
        assert await reason_of(kafka, too_new) == "unsupported_version"
        assert await reason_of(kafka, elsewhere) == "invalid"
        assert await reason_of(kafka, bad_address) == "invalid"
        assert address_key(f"0x{run_id}{9:030x}") not in follower.watch_set

        # And live, after the load: a bad record is dead-lettered, the next good one is watched.
        more_garbage = await put(producer, later, b"\xff")
        await put(producer, later, watch(later).to_bytes())
        await eventually(lambda: address_key(later) in follower.watch_set, what="the live add")
        assert await reason_of(kafka, more_garbage) == "undecodable"
