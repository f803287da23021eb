"""Webhook delivery end to end in one process: Kafka in, signed HTTP out, Postgres in between.

The schedule's second is 10 ms here, so "15 s, 1 min, 5 min" is 0.15 s, 0.6 s, 3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common import live
from pago.common.enums import DeliveryStatus, Mode, SessionStatus, WebhookEventType
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from pago.notifier.app import NotifierApp
from tests.support.kafka import caught_up
from tests.support.notifier import (
    ALL_EVENTS,
    deliveries,
    endpoint_row,
    mixed_events,
    new_secret,
    publish,
    reverted,
    seed_endpoint,
    seed_merchant,
    settle,
    updated,
)
from tests.support.receiver import Receiver, Reply, verify

pytestmark = pytest.mark.usefixtures("notifier")


class TestFanOut:
    async def test_each_endpoint_gets_its_events_once_signed(
        self,
        db: AsyncEngine,
        hooks: Receiver,
        producer: AIOKafkaProducer,
        kafka: KafkaServer,
        notifier: NotifierApp,
    ) -> None:
        merchant = await seed_merchant(db)
        default_id, default_secret = await seed_endpoint(db, merchant, hooks.url("/default"))
        all_id, all_secret = await seed_endpoint(
            db, merchant, hooks.url("/all", host="receiver.test"), events=ALL_EVENTS
        )
        live_id, _ = await seed_endpoint(db, merchant, hooks.url("/live"), mode=Mode.LIVE)
        other = await seed_merchant(db, "Other")
        await seed_endpoint(db, other, hooks.url("/other"), events=ALL_EVENTS)
        events = mixed_events(merchant)

        await publish(producer, [*events, *events])  # every event twice: a Kafka redelivery
        await hooks.wait_for(lambda r: len(r.at("/default")) >= 3 and len(r.at("/all")) >= 5)
        # No duplicate can come now: every record is fanned out (offsets caught up) and every
        # delivery it made has been sent.
        await caught_up(kafka.bootstrap_servers, notifier.settings.group_id, CHECKOUT_SESSIONS)
        await settle(db, all_id, 5)
        await settle(db, default_id, 3)
        assert len(await deliveries(db, all_id)) == 5

        got_default = [verify(r, default_secret) for r in hooks.at("/default")]
        got_all = [verify(r, all_secret) for r in hooks.at("/all")]
        assert sorted(e["event_type"] for e in got_default) == [
            "session.completed",
            "session.expired",
            "session.resolved",
        ]
        assert sorted(e["event_type"] for e in got_all) == [
            "session.completed",
            "session.expired",
            "session.payment_detected",
            "session.resolved",
            "session.underpaid",
        ]
        assert len({e["id"] for e in got_all}) == 5
        assert hooks.at("/live") == []
        assert hooks.at("/other") == []
        assert await deliveries(db, live_id) == []
        assert hooks.at("/all")[0].headers["host"] == f"receiver.test:{hooks.port}"

        completed = next(e for e in got_default if e["event_type"] == "session.completed")
        source = next(e for e in events if e.event_id == completed["id"])
        assert completed["created"] == int(source.occurred_at.timestamp())
        assert completed["data"] == {
            "object": "checkout_session",
            **source.session.model_dump(mode="json"),
        }
        assert completed["data"]["merchant_name"] == "Acme Shop — café"
        rows = await deliveries(db, default_id)
        assert {r["status"] for r in rows} == {DeliveryStatus.SUCCEEDED}
        assert all(r["attempts"] == 1 and r["last_status_code"] == 200 for r in rows)

    async def test_endpoint_created_after_the_event_does_not_get_it(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        # seed_endpoint backdates creation by one second: this event is older than that.
        old_event = updated(merchant, SessionStatus.PAID)
        old_event = old_event.model_copy(
            update={"occurred_at": old_event.occurred_at - timedelta(seconds=5)}
        )
        endpoint_id, _ = await seed_endpoint(db, merchant, hooks.url("/late"))
        fresh = updated(merchant, SessionStatus.PAID)
        await publish(producer, [old_event, fresh])
        await settle(db, endpoint_id, 1)
        assert [r.event["id"] for r in hooks.at("/late")] == [fresh.event_id]

    async def test_payment_reverted_goes_only_to_endpoints_that_opt_in(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer, redis: Redis
    ) -> None:
        merchant = await seed_merchant(db)
        default_id, _ = await seed_endpoint(db, merchant, hooks.url("/default"))
        opted_id, opted_secret = await seed_endpoint(
            db,
            merchant,
            hooks.url("/reverted"),
            events=[WebhookEventType.SESSION_PAYMENT_REVERTED, WebhookEventType.SESSION_EXPIRED],
        )
        event = reverted(merchant)
        # A later event of the same session (same key, same partition) proves the first one
        # was fanned out before it.
        marker = updated(
            merchant, SessionStatus.EXPIRED, SessionStatus.PENDING, session_id=event.session_id
        )

        await publish(producer, [event, marker])
        await settle(db, default_id, 1)
        await settle(db, opted_id, 2)

        assert [r.event["event_type"] for r in hooks.at("/default")] == ["session.expired"]
        got = {e["event_type"]: e for e in (verify(r, opted_secret) for r in hooks.at("/reverted"))}
        assert sorted(got) == ["session.expired", "session.payment_reverted"]
        assert got["session.payment_reverted"]["id"] == event.event_id
        assert got["session.payment_reverted"]["data"]["id"] == event.session_id
        # The hosted page's live feed gets it too (the SSE readers turn it into a page state).
        entries = await redis.xrange(live.stream_key(event.session_id)) or []
        assert [json.loads((f or {})[live.FIELD.encode()])["type"] for _, f in entries] == [
            "session.payment_reverted",
            "session.updated",
        ]


class TestRetries:
    async def test_a_failing_endpoint_is_retried_on_schedule_then_succeeds(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, secret = await seed_endpoint(db, merchant, hooks.url("/flaky"))
        hooks.script(
            "/flaky", Reply(500, body=b"db down"), Reply(502), Reply(404), Reply(204, body=b"")
        )
        event = updated(merchant, SessionStatus.PAID)
        await publish(producer, [event])
        await settle(db, endpoint_id, 1, timeout=15)

        attempts = hooks.at("/flaky")
        assert [verify(r, secret)["id"] for r in attempts] == [event.event_id] * 4
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        # 15 s, 1 min, 5 min at 10 ms per second: never earlier than due (how much later
        # depends on the machine's load, which is make bench's business).
        for gap, due in zip(gaps, (0.15, 0.6, 3.0), strict=True):
            assert gap >= due, gaps
        [row] = await deliveries(db, endpoint_id)
        assert row["status"] == DeliveryStatus.SUCCEEDED
        assert row["attempts"] == 4
        assert row["last_status_code"] == 204
        assert row["last_error"] is None
        assert row["delivered_at"] is not None

    @pytest.mark.parametrize("status", [429, 503])
    async def test_retry_after_is_honoured(
        self, status: int, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, hooks.url("/busy"))
        hooks.script("/busy", Reply(status, headers={"Retry-After": "2"}))
        await publish(producer, [updated(merchant, SessionStatus.EXPIRED)])
        await settle(db, endpoint_id, 1)
        first, second = hooks.at("/busy")
        # The schedule alone would retry after 0.15 s; the answer asked for 2 s.
        assert second.at - first.at >= 2.0

    async def test_410_fails_the_delivery_and_disables_the_endpoint(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        gone_id, _ = await seed_endpoint(db, merchant, hooks.url("/gone"))
        alive_id, _ = await seed_endpoint(db, merchant, hooks.url("/alive"))
        hooks.script("/gone", Reply(410, body=b"no such hook"))
        await publish(producer, [updated(merchant, SessionStatus.PAID)])
        await settle(db, gone_id, 1)
        [row] = await deliveries(db, gone_id)
        assert row["status"] == DeliveryStatus.FAILED
        assert row["last_status_code"] == 410
        assert row["last_error"] == "HTTP 410: no such hook"
        endpoint = await endpoint_row(db, gone_id)
        assert endpoint["disabled_at"] is not None
        assert "410" in endpoint["disabled_reason"]

        await publish(producer, [updated(merchant, SessionStatus.EXPIRED)])
        await settle(db, alive_id, 2)
        assert len(await deliveries(db, gone_id)) == 1
        assert len(hooks.at("/gone")) == 1

    async def test_a_timeout_is_a_failed_attempt(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, hooks.url("/slow"))
        hooks.script("/slow", Reply(delay=1.5))
        await publish(producer, [updated(merchant, SessionStatus.PAID)])
        await hooks.wait_for(lambda r: len(r.at("/slow")) == 2)
        await settle(db, endpoint_id, 1)
        [row] = await deliveries(db, endpoint_id)
        assert row["attempts"] == 2
        assert row["status"] == DeliveryStatus.SUCCEEDED

    async def test_a_slow_endpoint_does_not_delay_the_others(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        slow_id, _ = await seed_endpoint(db, merchant, hooks.url("/tarpit"))
        fast_id, _ = await seed_endpoint(db, merchant, hooks.url("/fast"))
        hung = asyncio.Event()
        hooks.script("/tarpit", *[Reply(hold=hung) for _ in range(12)])
        await publish(producer, [updated(merchant, SessionStatus.PAID) for _ in range(12)])
        # Every fast delivery arrives while the tarpit has answered nothing: serially behind it
        # they would wait for ever. It holds at most its two slots (endpoint_concurrency).
        try:
            await hooks.wait_for(lambda r: len(r.at("/fast")) == 12)
            assert hooks.most_in_flight["/tarpit"] <= 2
        finally:
            hung.set()
        await settle(db, slow_id, 12, timeout=30)
        await settle(db, fast_id, 12)


class TestSsrf:
    @pytest.mark.parametrize(
        ("host", "reason"),
        [
            ("10.0.0.1", "10.0.0.1 is a private address"),
            ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
            ("internal.test", "10.0.0.7 is a private address"),
            ("metadata.test", "169.254.169.254 is a cloud metadata address"),
            ("mixed.test", "192.168.1.20 is a private address"),
            ("[::ffff:10.1.1.1]", "embeds 10.1.1.1 is a private address"),
        ],
    )
    async def test_private_and_metadata_addresses_are_refused(
        self, host: str, reason: str, db: AsyncEngine, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, f"http://{host}:8080/hook")
        await publish(producer, [updated(merchant, SessionStatus.PAID)])
        deadline = time.monotonic() + 10
        while True:
            rows = await deliveries(db, endpoint_id)
            if rows and rows[0]["attempts"] >= 1 and rows[0]["last_error"]:
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)
        [row] = rows
        assert row["status"] == DeliveryStatus.PENDING  # retried on schedule, like any failure
        assert row["last_error"].startswith("refused")
        assert reason in row["last_error"]
        assert row["last_status_code"] is None

    async def test_live_endpoints_must_use_https(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, hooks.url("/plain"), mode=Mode.LIVE)
        await publish(producer, [updated(merchant, SessionStatus.PAID, mode=Mode.LIVE)])
        deadline = time.monotonic() + 10
        while not (rows := await deliveries(db, endpoint_id)) or not rows[0]["last_error"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert rows[0]["last_error"] == "refused: live-mode endpoints must use https"
        assert hooks.at("/plain") == []


class TestRotation:
    async def test_both_secrets_sign_during_the_overlap_then_only_the_new_one(
        self, db: AsyncEngine, hooks: Receiver, producer: AIOKafkaProducer, notifier: NotifierApp
    ) -> None:
        merchant = await seed_merchant(db)
        old = new_secret()
        rotating_id, new = await seed_endpoint(
            db,
            merchant,
            hooks.url("/rotating"),
            previous_secret=old,
            previous_expires_in=timedelta(hours=24),
        )
        expired_id, current = await seed_endpoint(
            db,
            merchant,
            hooks.url("/rotated"),
            previous_secret=new_secret(),
            previous_expires_in=timedelta(seconds=-1),
        )
        await publish(producer, [updated(merchant, SessionStatus.PAID)])
        await settle(db, rotating_id, 1)
        await settle(db, expired_id, 1)
        [during] = hooks.at("/rotating")
        verify(during, new, previous=old)
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        [after] = hooks.at("/rotated")
        verify(after, current)


class TestLiveFeed:
    async def test_every_event_is_appended_once_in_order_and_announced(
        self, redis: Redis, producer: AIOKafkaProducer
    ) -> None:
        session_id = "cs_" + uuid.uuid4().hex[:24]
        statuses = [SessionStatus.PENDING, SessionStatus.UNDERPAID, SessionStatus.PAID]
        events = [updated("mer_x", status, session_id=session_id) for status in statuses]
        async with redis.pubsub() as pubsub:
            await pubsub.subscribe(live.channel(session_id))
            await publish(producer, [*events, *events])
            announced: list[bytes] = []
            deadline = time.monotonic() + 10
            while len(announced) < 3 and time.monotonic() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None:
                    announced.append(message["data"])
        entries = await redis.xrange(live.stream_key(session_id)) or []
        assert [json.loads((f or {})[live.FIELD.encode()])["event_id"] for _, f in entries] == [
            e.event_id for e in events
        ]
        assert announced == [entry_id for entry_id, _ in entries]
        assert 0 < await redis.ttl(live.stream_key(session_id)) <= live.TTL_SECONDS


async def test_the_notifier_is_ready_and_serves_metrics(notifier: NotifierApp) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{notifier.health.port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert "pago_notifier_attempts_total" in metrics
