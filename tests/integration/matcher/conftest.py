"""A running matcher (the real composition root) on the test run's Postgres, Redis and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaProducer

from pago.common.enums import Mode, Network
from pago.common.events import ChainScanned, TransferObserved
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_TRANSFERS, TOPICS, cursor_key, transfer_key
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.matcher.app import MatcherApp, create_app
from pago.matcher.settings import MatcherSettings
from tests.support.goplus import FakeGoPlus
from tests.support.matcher import BASE_URL, aml_dir

T = TypeVar("T")


@pytest.fixture(scope="module")
async def goplus() -> AsyncIterator[FakeGoPlus]:
    server = FakeGoPlus()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def provider(goplus: FakeGoPlus) -> FakeGoPlus:
    """The module's provider, answering normally at the start of every test."""
    goplus.mode = "ok"
    goplus.flags.clear()
    goplus.requests.clear()
    return goplus


def matcher_settings(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, **over: object
) -> MatcherSettings:
    values: dict[str, object] = {
        "database_url": database.url,
        "redis_url": redis_server.url,
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "env": "test",
        "http_port": 0,
        "batch_timeout_ms": 20,
        "retry_max_backoff": 0.5,
        "shutdown_timeout": 5.0,
        "expiry_interval": 0.2,
        "resolution_interval": 0.05,
        "aml_retry_interval": 0.2,
        "aml_list_path": str(aml_dir()),
        "aml_provider_attempts": 2,
        "aml_provider_backoff": 0.01,
        "aml_provider_timeout": 0.5,
        "checkout_base_url": BASE_URL,
        # The mock broker ignores a leaving member until its session times out: with the
        # production 10 s, the next process of a group would wait ~40 s to join. A group of
        # our own also keeps any other test's matcher process out of the way.
        "session_timeout_ms": 1000,
        "heartbeat_interval_ms": 250,
        "group_id": f"pago-matcher-test-{uuid.uuid4().hex[:8]}",
        **over,
    }
    return MatcherSettings.model_validate(values)


@pytest.fixture(scope="module")
async def matcher(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, goplus: FakeGoPlus
) -> AsyncIterator[MatcherApp]:
    app = create_app(matcher_settings(database, redis_server, kafka, aml_provider_url=goplus.url))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="module")
async def producer(kafka: KafkaServer) -> AsyncIterator[AIOKafkaProducer]:
    producer = create_producer(kafka.bootstrap_servers, client_id="matcher-tests")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def publish(producer: AIOKafkaProducer, *transfers: TransferObserved) -> None:
    """Send transfers as a watcher does (keyed by address: one partition, in order)."""
    acks = [
        await producer.send(
            CHAIN_TRANSFERS,
            t.to_bytes(),
            key=transfer_key(t.network.value, t.to_address).encode(),
        )
        for t in transfers
    ]
    await asyncio.gather(*acks)


TRANSFER_PARTITIONS = next(t.partitions for t in TOPICS if t.name == CHAIN_TRANSFERS)


async def scan(
    producer: AIOKafkaProducer,
    block_time: datetime,
    *,
    network: Network = Network.ETHEREUM,
    mode: Mode = Mode.TEST,
    block_number: int = 1_000,
    partitions: Iterable[int] | None = None,
) -> None:
    """Write ``ChainScanned`` markers as a watcher does after the broker acked every transfer up
    to ``block_number``: one per partition of chain.transfers (all of them unless
    ``partitions`` names some), explicit partition, key ``{network}:{mode}``, headers ``v`` and
    ``event_type``."""
    acks = []
    for partition in range(TRANSFER_PARTITIONS) if partitions is None else partitions:
        marker = ChainScanned(
            network=network,
            mode=mode,
            block_number=block_number,
            block_hash="0x" + f"{block_number:064x}",
            block_time=block_time,
            partition=partition,
            partitions=TRANSFER_PARTITIONS,
            scanned_at=datetime.now(UTC),
        )
        acks.append(
            await producer.send(
                CHAIN_TRANSFERS,
                marker.to_bytes(),
                key=cursor_key(network.value, mode.value).encode(),
                partition=partition,
                headers=[("v", b"1"), ("event_type", b"ChainScanned")],
            )
        )
    await asyncio.gather(*acks)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``until`` holds on its value; fail with the last value otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if until(value):
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.03)
