"""card.sessions through the real notifier (composition root, in-process) on the Kafka-protocol
broker, to a receiver over TCP: every card session event reaches each subscribed endpoint once,
signed like every other webhook, across a restart; a bad card record is dead-lettered and what
follows it is delivered."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.deadletter import H_CONSUMER, H_REASON
from pago.common.enums import DeliveryStatus
from pago.common.events import CardSessionEvent
from pago.common.topics import CARD_SESSIONS, DEADLETTER
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.app import NotifierApp, create_app
from tests.support.kafka import caught_up, dead_letters, end_offsets, header_value
from tests.support.notifier import (
    ALL_EVENTS,
    card_event,
    card_events,
    deliveries,
    fake_resolver,
    notifier_settings,
    publish_cards,
    seed_endpoint,
    seed_merchant,
    settle,
)
from tests.support.receiver import Receiver, verify

DEFAULT_TYPES = {"card_session.completed", "card_session.failed", "card_session.expired"}


async def test_every_card_event_reaches_every_endpoint_once_across_a_restart(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    database: Database,
    redis_server: RedisServer,
    kafka: KafkaServer,
) -> None:
    merchant = await seed_merchant(db)
    a_id, a_secret = await seed_endpoint(db, merchant, hooks.url("/cards"))
    b_id, b_secret = await seed_endpoint(db, merchant, hooks.url("/all"), events=ALL_EVENTS)
    secrets = {"/cards": a_secret, "/all": b_secret}
    settings = notifier_settings(
        database, redis_server, kafka, group_id=f"notifier-cards-{uuid.uuid4().hex[:8]}"
    )

    first = create_app(settings, resolver=fake_resolver)
    await first.start()
    try:
        before = [e for _ in range(3) for e in card_events(merchant)]  # 9 to /cards, 15 to /all
        await publish_cards(producer, before)
        await hooks.wait_for(lambda r: len(r.at("/cards")) == 9 and len(r.at("/all")) == 15)
    finally:
        await first.stop()

    after = [e for _ in range(2) for e in card_events(merchant)]
    await publish_cards(producer, after)  # while no notifier runs
    second = create_app(settings, resolver=fake_resolver)
    await second.start()
    try:
        await hooks.wait_for(lambda r: len(r.at("/cards")) == 15 and len(r.at("/all")) == 25)
        # No duplicate can come after this: the card group's offsets are at the end of the
        # topic and no delivery is left to send.
        await caught_up(kafka.bootstrap_servers, settings.card_group, CARD_SESSIONS)
        await settle(db, a_id, 15)
        await settle(db, b_id, 25)
    finally:
        await second.stop()

    everything = [*before, *after]
    for path, expected in (
        ("/cards", {e.event_id for e in everything if e.type in DEFAULT_TYPES}),
        ("/all", {e.event_id for e in everything}),
    ):
        ids = Counter(verify(r, secrets[path])["id"] for r in hooks.at(path))
        assert all(n == 1 for n in ids.values()), ids.most_common(3)
        assert set(ids) == expected
    by_id = {e.event_id: e for e in everything}
    for request in hooks.at("/all"):
        body = request.event
        event = by_id[body["id"]]
        assert body["event_type"] == event.type
        assert body["data"]["object"] == "card_session"
        assert body["data"]["sessionId"] == event.session_id
        assert body["data"]["status"] == event.session.status.value
        assert body["data"]["amount"] == {
            "currency": "AUD",
            "total": "140.76",
            "shipping": "9.95",
            "tax": "11.81",
        }
        assert request.headers["webhook-id"] == event.event_id
    rows = [*await deliveries(db, a_id), *await deliveries(db, b_id)]
    assert {r["status"] for r in rows} == {DeliveryStatus.SUCCEEDED}


async def send(
    producer: AIOKafkaProducer, key: str, value: bytes, event_type: str | None
) -> RecordMetadata:
    headers = [("v", b"1")] + ([("event_type", event_type.encode())] if event_type else [])
    future = await producer.send(CARD_SESSIONS, value, key=key.encode(), headers=headers)
    return await future


async def test_a_bad_card_record_is_dead_lettered_and_what_follows_is_delivered(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    kafka: KafkaServer,
    notifier: NotifierApp,
) -> None:
    merchant = await seed_merchant(db)
    _, secret = await seed_endpoint(db, merchant, hooks.url("/after-bad-card"))
    event: CardSessionEvent = card_event(merchant, "card_session.completed")
    key = event.session_id
    letters_before = await end_offsets(kafka.bootstrap_servers, DEADLETTER)
    garbage = await send(producer, key, b'{"type": "card_session.completed"', "CardSessionEvent")
    unknown = await send(producer, key, event.to_bytes(), "CardSessionRefunded")
    invalid = await send(
        producer,
        key,
        event.to_bytes().replace(b'"total":14076', b'"total":140.76'),  # a float is no amount
        "CardSessionEvent",
    )
    good = await send(producer, key, event.to_bytes(), "CardSessionEvent")

    await hooks.wait_for(lambda r: len(r.at("/after-bad-card")) >= 1)
    delivered = verify(hooks.at("/after-bad-card")[0], secret)
    assert (delivered["id"], delivered["event_type"]) == (event.event_id, "card_session.completed")
    assert Decimal(delivered["data"]["amount"]["total"]) == Decimal("140.76")
    reasons = {}
    for meta in (garbage, unknown, invalid):
        [letter] = await dead_letters(
            kafka.bootstrap_servers,
            topic=CARD_SESSIONS,
            partition=meta.partition,
            offset=meta.offset,
            since=letters_before,
        )
        assert header_value(letter, H_CONSUMER) == notifier.settings.group_id
        assert letter.key == key.encode()
        reasons[meta.offset] = header_value(letter, H_REASON)
    assert reasons == {
        garbage.offset: "undecodable",
        unknown.offset: "unknown_event_type",
        invalid.offset: "invalid",
    }
    committed = await caught_up(
        kafka.bootstrap_servers, notifier.settings.card_group, CARD_SESSIONS
    )
    assert (committed[good.partition] or 0) >= good.offset + 1
