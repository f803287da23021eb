"""A running notifier (the real composition root, in-process) and a receiver, per module.

The notifier reads ``checkout.sessions`` in a consumer group of its own (other tests publish
there too; their merchants have no endpoints, so their events fan out to nothing). Settings
shrink time: the retry schedule's second is 10 ms, the request timeout 1 s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pago.common.kafka import create_producer
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.app import NotifierApp, create_app
from pago.notifier.guard import system_resolver
from pago.notifier.settings import NotifierSettings
from tests.support.receiver import Receiver

FAKE_DNS: dict[str, list[str]] = {
    "receiver.test": ["127.0.0.1"],
    "internal.test": ["10.0.0.7"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.215.14", "192.168.1.20"],
}
"""Names the in-process notifier resolves without DNS (anything else goes to the system)."""


async def fake_resolver(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    return await system_resolver(host, port)


def notifier_settings(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, **over: Any
) -> NotifierSettings:
    values: dict[str, Any] = {
        "database_url": database.url,
        "redis_url": redis_server.url,
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "env": "test",
        "http_port": 0,
        "batch_timeout_ms": 20,
        "fetch_wait_ms": 50,
        "retry_max_backoff": 0.5,
        "shutdown_timeout": 5.0,
        "poll_interval": 0.05,
        "timeout": 1.0,
        "lease": 5.0,
        "retry_unit": 0.01,
        "retry_jitter": 0.0,
        "concurrency": 16,
        "endpoint_concurrency": 2,
        "allow_loopback": True,
        "db_pool_size": 5,
        **over,
    }
    return NotifierSettings.model_validate(values)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def hooks(receiver: Receiver) -> Receiver:
    """The module's receiver, with no requests and no scripts at the start of the test."""
    receiver.reset()
    return receiver


@pytest.fixture(scope="module")
async def producer(kafka: KafkaServer) -> AsyncIterator[AIOKafkaProducer]:
    client = create_producer(kafka.bootstrap_servers, client_id="notifier-tests")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@pytest.fixture(scope="module")
async def notifier(
    database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> AsyncIterator[NotifierApp]:
    group = f"notifier-tests-{uuid.uuid4().hex[:8]}"
    settings = notifier_settings(database, redis_server, kafka, group_id=group)
    app = create_app(settings, resolver=fake_resolver)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
