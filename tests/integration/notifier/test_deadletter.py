"""The notifier against the real broker: an added field is delivered, garbage is dead-lettered
(its offset committed, the events behind it delivered), and the committed offsets the broker
holds are exactly the last processed offset + 1."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.deadletter import H_CONSUMER, H_REASON
from pago.common.deadletter.replay import read_letters
from pago.common.enums import SessionStatus
from pago.common.events import AnySessionEvent
from pago.common.topics import CHECKOUT_SESSIONS, DEADLETTER
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.app import NotifierApp, create_app
from tests.support.kafka import assert_committed_past, dead_letters, end_offsets, header_value
from tests.support.kafka import caught_up as wait_caught_up
from tests.support.notifier import (
    fake_resolver,
    notifier_settings,
    seed_endpoint,
    seed_merchant,
    updated,
)
from tests.support.pg_proxy import PostgresProxy
from tests.support.receiver import Receiver, verify

pytestmark = pytest.mark.usefixtures("notifier")


async def send(
    producer: AIOKafkaProducer, key: str, value: bytes, event_type: str | None = None
) -> RecordMetadata:
    headers = [("v", b"1")] + ([("event_type", event_type.encode())] if event_type else [])
    future = await producer.send(CHECKOUT_SESSIONS, value, key=key.encode(), headers=headers)
    return await future


async def send_event(producer: AIOKafkaProducer, event: AnySessionEvent) -> RecordMetadata:
    return await send(producer, event.session_id, event.to_bytes(), type(event).__name__)


async def caught_up(kafka: KafkaServer, group_id: str) -> dict[int, int | None]:
    return await wait_caught_up(kafka.bootstrap_servers, group_id, CHECKOUT_SESSIONS)


async def test_an_event_with_added_fields_is_delivered(
    db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
) -> None:
    merchant = await seed_merchant(db)
    _, secret = await seed_endpoint(db, merchant, hooks.url("/added"))
    event = updated(merchant, SessionStatus.PAID)
    body = json.loads(event.to_bytes())
    body["refund_policy"] = "a field of a newer api"
    body["session"]["tax_amount"] = "0.10"

    await send(producer, event.session_id, json.dumps(body).encode(), "SessionUpdated")

    await hooks.wait_for(lambda r: len(r.at("/added")) >= 1)
    delivered = verify(hooks.at("/added")[0], secret)
    assert (delivered["id"], delivered["event_type"]) == (event.event_id, "session.completed")
    assert "tax_amount" not in delivered["data"]


async def test_garbage_is_dead_lettered_committed_and_what_follows_is_delivered(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    kafka: KafkaServer,
    notifier: NotifierApp,
) -> None:
    merchant = await seed_merchant(db)
    await seed_endpoint(db, merchant, hooks.url("/after-garbage"))
    event = updated(merchant, SessionStatus.EXPIRED)
    letters_before = await end_offsets(kafka.bootstrap_servers, DEADLETTER)
    garbage = await send(
        producer, event.session_id, b'{"type": "session.updated"', "SessionUpdated"
    )
    unknown = await send(producer, event.session_id, event.to_bytes(), "SessionRefunded")
    good = await send_event(producer, event)

    await hooks.wait_for(lambda r: len(r.at("/after-garbage")) >= 1)
    reasons = {}
    for meta in (garbage, unknown):
        [letter] = await dead_letters(
            kafka.bootstrap_servers,
            topic=CHECKOUT_SESSIONS,
            partition=meta.partition,
            offset=meta.offset,
            since=letters_before,
        )
        assert header_value(letter, H_CONSUMER) == notifier.settings.group_id
        assert letter.key == event.session_id.encode()
        reasons[meta.offset] = header_value(letter, H_REASON)
    assert reasons == {garbage.offset: "undecodable", unknown.offset: "unknown_event_type"}
    committed = await caught_up(kafka, notifier.settings.group_id)
    assert (committed[good.partition] or 0) >= good.offset + 1


async def test_the_broker_holds_the_last_processed_offset_plus_one(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    kafka: KafkaServer,
    notifier: NotifierApp,
) -> None:
    merchant = await seed_merchant(db)
    await seed_endpoint(db, merchant, hooks.url("/offsets"))
    events = [updated(merchant, SessionStatus.PAID) for _ in range(8)]  # spread over partitions
    sent = [await send_event(producer, e) for e in events]

    await hooks.wait_for(lambda r: len(r.at("/offsets")) >= len(events))
    ends = await end_offsets(kafka.bootstrap_servers, CHECKOUT_SESSIONS)
    committed = await caught_up(kafka, notifier.settings.group_id)

    assert_committed_past(sent, ends, committed)


async def test_a_postgres_outage_is_retried_never_dead_lettered(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    kafka: KafkaServer,
    database: Database,
    redis_server: RedisServer,
) -> None:
    merchant = await seed_merchant(db)
    await seed_endpoint(db, merchant, hooks.url("/outage"))
    proxy = PostgresProxy(database)
    await proxy.start()
    settings = notifier_settings(
        database,
        redis_server,
        kafka,
        database_url=proxy.url,
        group_id=f"notifier-outage-{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings, resolver=fake_resolver)
    await app.start()
    try:
        await caught_up(kafka, settings.group_id)  # what earlier tests left is behind it
        failures = _batch_failures()
        await proxy.cut()
        event = updated(merchant, SessionStatus.PAID)
        sent = await send_event(producer, event)
        for _ in range(600):  # the batch fails against the cut database, twice
            if _batch_failures() >= failures + 2:
                break
            await asyncio.sleep(0.05)
        assert _batch_failures() >= failures + 2, "the outage never failed a batch"
        await proxy.restore()
        await hooks.wait_for(lambda r: len(r.at("/outage")) >= 1, timeout=30)
        await caught_up(kafka, settings.group_id)
    finally:
        await app.stop()
        await proxy.stop()
    letters = await read_letters(kafka.bootstrap_servers)
    origin = (CHECKOUT_SESSIONS, sent.partition, sent.offset)
    assert not [x for x in letters if x.origin == origin], "a transient failure was dead-lettered"


def _batch_failures() -> float:
    return REGISTRY.get_sample_value("pago_notifier_batch_failures_total") or 0.0
