"""A running notifier (the real composition root, in-process) and a receiver, per module.

The notifier reads ``checkout.sessions`` in a consumer group of its own (other tests publish
there too; their merchants have no endpoints, so their events fan out to nothing). Settings
shrink time: the retry schedule's second is 10 ms, the request timeout 1 s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from pago.common.kafka import create_producer
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.app import NotifierApp, create_app
from tests.support.notifier import fake_resolver, notifier_settings
from tests.support.receiver import Receiver


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
