"""The checkout.sessions handler over real Postgres, Kafka replaced by a recording port.

What it pins down: deliveries are committed before offsets move; a failed batch is rewound and
commits nothing; a record that is not a session event is dead-lettered, not a roadblock (and an
added field is no reason to refuse one); a redelivered batch creates no second delivery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.deadletter import Reason
from pago.common.enums import SessionStatus
from pago.common.events import AnySessionEvent
from pago.common.topics import CHECKOUT_SESSIONS
from pago.notifier.consumer import FanOutFn, SessionEventHandler
from pago.notifier.service import FanOut, fan_out
from tests.component.notifier.support import Letters, RecordingPort, count
from tests.support.notifier import (
    ALL_EVENTS,
    created,
    seed_endpoint,
    seed_merchant,
    updated,
)


def record(partition: int, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        CHECKOUT_SESSIONS, partition, offset, 0, 0, b"cs_1", value, None, 4, len(value), []
    )


def records(
    events: Sequence[AnySessionEvent], partition: int = 0
) -> list[ConsumerRecord[bytes, bytes]]:
    return [record(partition, 100 + i, e.to_bytes()) for i, e in enumerate(events)]


def handler(
    engine: AsyncEngine,
    port: RecordingPort,
    woken: list[int],
    fan_out: FanOutFn = fan_out,
    letters: Letters | None = None,
) -> SessionEventHandler:
    return SessionEventHandler(
        engine,
        on_stored=lambda: woken.append(1),
        deadletters=letters or Letters(),
        first_backoff=0.01,
        max_backoff=0.01,
        port=lambda _: port,
        fan_out=fan_out,
    )


class TestHandle:
    async def test_offsets_move_only_after_the_deliveries_are_committed(
        self, db: AsyncEngine
    ) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        await seed_endpoint(db, merchant, "https://shop.example/b", events=ALL_EVENTS)
        port, woken = RecordingPort(db), list[int]()
        batch = [
            *records([updated(merchant, SessionStatus.PAID), created(merchant)], partition=0),
            *records([updated(merchant, SessionStatus.UNDERPAID)], partition=3),
        ]
        await handler(db, port, woken).handle(batch, object())
        assert port.commits == [
            {TopicPartition(CHECKOUT_SESSIONS, 0): 102, TopicPartition(CHECKOUT_SESSIONS, 3): 101}
        ]
        assert port.stored_at_commit == [3]  # completed ×2 endpoints, underpaid ×1
        assert woken == [1]

    async def test_a_redelivered_batch_adds_nothing(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        port, woken = RecordingPort(db), list[int]()
        batch = records([updated(merchant, SessionStatus.EXPIRED)])
        consume = handler(db, port, woken)
        await consume.handle(batch, object())
        await consume.handle(batch, object())
        assert port.stored_at_commit == [1, 1]
        assert woken == [1]  # nothing new the second time: the worker is not woken

    async def test_a_record_that_is_no_session_event_is_dead_lettered(
        self, db: AsyncEngine
    ) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        port, woken, letters = RecordingPort(db), list[int](), Letters()
        good = updated(merchant, SessionStatus.PAID)
        batch = [
            record(0, 7, b"not json"),
            record(0, 8, b'{"type": "session.exploded", "v": 1}'),
            record(0, 9, good.to_bytes().replace(b'"v":1', b'"v":2')),
            record(0, 10, good.to_bytes()),
        ]
        await handler(db, port, woken, letters=letters).handle(batch, object())
        assert [(x.record.offset, x.reason) for x in letters.sent] == [
            (7, Reason.UNDECODABLE),
            (8, Reason.INVALID),
            (9, Reason.UNSUPPORTED_VERSION),
        ]
        assert port.commits == [{TopicPartition(CHECKOUT_SESSIONS, 0): 11}]
        assert port.stored_at_commit == [1]

    async def test_an_added_field_is_read_not_refused(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        port, woken, letters = RecordingPort(db), list[int](), Letters()
        body = json.loads(updated(merchant, SessionStatus.PAID).to_bytes())
        body["refund_policy"] = "a field of a newer api"
        body["session"]["tax_amount"] = "0.10"
        await handler(db, port, woken, letters=letters).handle(
            [record(0, 3, json.dumps(body).encode())], object()
        )
        assert letters.sent == []
        assert port.stored_at_commit == [1]

    async def test_offsets_wait_for_the_dead_letters_ack(self, db: AsyncEngine) -> None:
        port, woken, letters = RecordingPort(db), list[int](), Letters()
        letters.fail = True
        consume = handler(db, port, woken, letters=letters)
        batch = [record(2, 40, b"garbage")]
        await consume.handle(batch, object())
        assert port.commits == []
        assert port.rewinds == [{TopicPartition(CHECKOUT_SESSIONS, 2): 40}]
        letters.fail = False
        await consume.handle(batch, object())
        assert [x.record.offset for x in letters.sent] == [40]
        assert port.commits == [{TopicPartition(CHECKOUT_SESSIONS, 2): 41}]

    async def test_a_failed_batch_is_rewound_and_commits_nothing(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        crashes = [1]

        async def crashing(conn: AsyncConnection, batch: Sequence[AnySessionEvent]) -> FanOut:
            # The fan-out's writes are real; the process "dies" after them, before COMMIT.
            result = await fan_out(conn, batch)
            if crashes:
                crashes.pop()
                raise RuntimeError("the database went away before COMMIT")
            return result

        port, woken = RecordingPort(db), list[int]()
        consume = handler(db, port, woken, crashing)
        batch = records([updated(merchant, SessionStatus.PAID)], partition=5)
        await consume.handle(batch, object())
        assert port.commits == []
        assert port.rewinds == [{TopicPartition(CHECKOUT_SESSIONS, 5): 100}]
        assert await count(db) == 0  # rolled back
        await consume.handle(batch, object())  # the same records, come round again
        assert port.commits == [{TopicPartition(CHECKOUT_SESSIONS, 5): 101}]
        assert port.stored_at_commit == [1]

    async def test_a_batch_that_cannot_be_rewound_stops_the_consumer(self, db: AsyncEngine) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")

        crashes = [1]

        async def failing(conn: AsyncConnection, batch: Sequence[AnySessionEvent]) -> FanOut:
            if crashes:
                crashes.pop()
                raise RuntimeError("the database went away before COMMIT")
            return await fan_out(conn, batch)

        port, woken, halted = RecordingPort(db, rewind_fails=True), list[int](), list[bool]()
        consume = handler(db, port, woken, failing)
        consume.on_halt = lambda: halted.append(True)
        batch = records([updated(merchant, SessionStatus.PAID)], partition=1)
        await consume.handle(batch, object())
        assert halted == [True]
        # The same consumer is handed the next poll: it must not read on.
        await consume.handle(records([created(merchant)], partition=2), object())
        assert port.commits == [], "committed past a batch it could not rewind"
        assert (await count(db), woken) == (0, [])

    async def test_a_poison_event_is_isolated_and_dead_lettered_the_rest_fan_out(
        self, db: AsyncEngine
    ) -> None:
        merchant = await seed_merchant(db)
        await seed_endpoint(db, merchant, "https://shop.example/a")
        good, bad, also = (updated(merchant, SessionStatus.PAID) for _ in range(3))

        async def choking(conn: AsyncConnection, batch: Sequence[AnySessionEvent]) -> FanOut:
            # The fan-out's own writes are real; this event's data makes it raise every time.
            result = await fan_out(conn, batch)
            if any(e.event_id == bad.event_id for e in batch):
                raise ValueError("a value this event carries cannot be stored")
            return result

        port, woken, letters = RecordingPort(db), list[int](), Letters()
        consume = handler(db, port, woken, choking, letters)
        batch = records([good, bad, also], partition=4)
        await consume.handle(batch, object())
        assert (port.commits, letters.sent, await count(db)) == ([], [], 0)
        await consume.handle(batch, object())  # the rewound batch, one event at a time
        assert [(x.record.offset, x.reason) for x in letters.sent] == [(101, Reason.POISON)]
        assert "ValueError" in letters.sent[0].detail
        assert port.commits == [{TopicPartition(CHECKOUT_SESSIONS, 4): 103}]
        assert port.stored_at_commit == [2]
