"""The card.sessions handler over real Postgres, Kafka replaced by a recording port.

What it pins down: each card session event becomes one delivery per subscribed endpoint —
``card_session.completed``, ``.failed``, ``.expired`` by default, ``.created`` and ``.cancelled``
only where listed — exactly once across redeliveries; the stored body is the signed one; a record
that is not a card session event is dead-lettered and never holds the partition; a failed batch
is rewound and commits nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.deadletter import Reason
from pago.common.enums import CardSessionStatus, Mode, SessionStatus, WebhookEventType
from pago.common.events import CardSessionEvent
from pago.common.topics import CARD_SESSIONS
from pago.notifier.consumer import CardFanOutFn, CardSessionEventHandler
from pago.notifier.service import FanOut, fan_out_cards
from tests.component.notifier.support import Letters, RecordingPort, count
from tests.support.notifier import (
    ALL_EVENTS,
    card_event,
    card_events,
    deliveries,
    seed_endpoint,
    seed_merchant,
    updated,
)


def record(
    partition: int, offset: int, value: bytes, event_type: bytes | None = b"CardSessionEvent"
) -> ConsumerRecord[bytes, bytes]:
    headers = [("event_type", event_type)] if event_type is not None else []
    return ConsumerRecord(
        CARD_SESSIONS, partition, offset, 0, 0, b"sid", value, None, 3, len(value), headers
    )


def records(
    events: Sequence[CardSessionEvent], partition: int = 0
) -> list[ConsumerRecord[bytes, bytes]]:
    return [record(partition, 100 + i, e.to_bytes()) for i, e in enumerate(events)]


def handler(
    engine: AsyncEngine,
    port: RecordingPort,
    woken: list[int],
    fan_out: CardFanOutFn = fan_out_cards,
    letters: Letters | None = None,
) -> CardSessionEventHandler:
    return CardSessionEventHandler(
        engine,
        on_stored=lambda: woken.append(1),
        deadletters=letters or Letters(),
        first_backoff=0.01,
        max_backoff=0.01,
        port=lambda _: port,
        fan_out=fan_out,
    )


class TestFanOut:
    async def test_defaults_get_the_outcomes_opt_ins_get_what_they_listed(
        self, db: AsyncEngine
    ) -> None:
        merchant = await seed_merchant(db)
        default_id, _ = await seed_endpoint(db, merchant, "https://shop.example/default")
        all_id, _ = await seed_endpoint(db, merchant, "https://shop.example/all", events=ALL_EVENTS)
        only_id, _ = await seed_endpoint(
            db,
            merchant,
            "https://shop.example/completed",
            events=[WebhookEventType.CARD_SESSION_COMPLETED],
        )
        crypto_id, _ = await seed_endpoint(
            db, merchant, "https://shop.example/crypto", events=[WebhookEventType.SESSION_COMPLETED]
        )
        events = card_events(merchant)
        port, woken = RecordingPort(db), list[int]()

        await handler(db, port, woken).handle(records(events, partition=7), object())

        def kinds(rows: list[dict[str, object]]) -> list[str]:
            return sorted(str(r["event_type"]) for r in rows)

        assert kinds(await deliveries(db, default_id)) == [
            "card_session.completed",
            "card_session.expired",
            "card_session.failed",
        ]
        assert kinds(await deliveries(db, all_id)) == sorted(e.type for e in events)
        assert kinds(await deliveries(db, only_id)) == ["card_session.completed"]
        assert await deliveries(db, crypto_id) == []
        assert port.commits == [{TopicPartition(CARD_SESSIONS, 7): 105}]
        assert port.stored_at_commit == [3 + 5 + 1]
        assert woken == [1]

    async def test_the_stored_body_is_the_card_session_webhook(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, "https://shop.example/a")
        event = card_event(merchant, "card_session.failed")
        port, woken = RecordingPort(db), list[int]()

        await handler(db, port, woken).handle(records([event]), object())

        [row] = await deliveries(db, endpoint_id)
        assert (row["event_id"], row["event_type"]) == (event.event_id, "card_session.failed")
        body = json.loads(bytes(row["payload"]), parse_float=Decimal)
        assert body["id"] == event.event_id
        assert body["data"]["object"] == "card_session"
        assert body["data"]["sessionId"] == event.session_id
        assert body["data"]["status"] == "FAILED"
        assert body["data"]["amount"]["total"] == "140.76"

    async def test_only_the_merchants_own_endpoints_in_the_events_mode(
        self, db: AsyncEngine
    ) -> None:
        merchant, other = await seed_merchant(db), await seed_merchant(db, "Other")
        test_id, _ = await seed_endpoint(db, merchant, "https://shop.example/test")
        live_id, _ = await seed_endpoint(db, merchant, "https://shop.example/live", mode=Mode.LIVE)
        other_id, _ = await seed_endpoint(db, other, "https://other.example/a")
        port, woken = RecordingPort(db), list[int]()

        await handler(db, port, woken).handle(
            records([card_event(merchant, mode=Mode.LIVE)]), object()
        )

        assert [len(await deliveries(db, e)) for e in (test_id, live_id, other_id)] == [0, 1, 0]

    async def test_a_repeated_status_is_no_webhook(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, "https://shop.example/a")
        again = card_event(merchant, previous=CardSessionStatus.COMPLETED)
        port, woken = RecordingPort(db), list[int]()

        await handler(db, port, woken).handle(records([again]), object())

        assert await deliveries(db, endpoint_id) == []
        assert port.commits == [{TopicPartition(CARD_SESSIONS, 0): 101}]
        assert woken == []


class TestHandle:
    async def test_a_redelivered_batch_adds_nothing(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        port, woken = RecordingPort(db), list[int]()
        batch = records([card_event(merchant), card_event(merchant, "card_session.expired")])
        consume = handler(db, port, woken)
        await consume.handle(batch, object())
        await consume.handle(batch, object())
        assert port.stored_at_commit == [2, 2]
        assert woken == [1]

    async def test_a_record_that_is_no_card_session_event_is_dead_lettered(
        self, db: AsyncEngine
    ) -> None:
        merchant = await seed_merchant(db)
        endpoint_id, _ = await seed_endpoint(db, merchant, "https://shop.example/a")
        port, woken, letters = RecordingPort(db), list[int](), Letters()
        good = card_event(merchant)
        checkout = updated(merchant, SessionStatus.PAID)
        batch = [
            record(0, 7, b"not json"),
            record(0, 8, good.to_bytes(), event_type=b"CardSessionRefunded"),
            record(0, 9, good.to_bytes().replace(b'"v":1', b'"v":2')),
            record(0, 10, checkout.to_bytes(), event_type=None),
            record(
                0, 11, good.to_bytes().replace(b'"card_session.completed"', b'"card_session.paid"')
            ),
            record(0, 12, good.to_bytes(), event_type=None),
        ]
        await handler(db, port, woken, letters=letters).handle(batch, object())
        assert [(x.record.offset, x.reason) for x in letters.sent] == [
            (7, Reason.UNDECODABLE),
            (8, Reason.UNKNOWN_EVENT_TYPE),
            (9, Reason.UNSUPPORTED_VERSION),
            (10, Reason.INVALID),
            (11, Reason.INVALID),
        ]
        assert port.commits == [{TopicPartition(CARD_SESSIONS, 0): 13}]
        assert [r["event_id"] for r in await deliveries(db, endpoint_id)] == [good.event_id]

    async def test_a_failed_batch_is_rewound_and_commits_nothing(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        crashes = [1]

        async def crashing(conn: AsyncConnection, batch: Sequence[CardSessionEvent]) -> FanOut:
            result = await fan_out_cards(conn, batch)  # real writes, then "dies" before COMMIT
            if crashes:
                crashes.pop()
                raise RuntimeError("the database went away before COMMIT")
            return result

        port, woken = RecordingPort(db), list[int]()
        consume = handler(db, port, woken, crashing)
        batch = records([card_event(merchant)], partition=5)
        await consume.handle(batch, object())
        assert (port.commits, port.rewinds) == ([], [{TopicPartition(CARD_SESSIONS, 5): 100}])
        assert await count(db) == 0
        await consume.handle(batch, object())
        assert port.commits == [{TopicPartition(CARD_SESSIONS, 5): 101}]
        assert port.stored_at_commit == [1]
