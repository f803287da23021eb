"""The chain.transfers handler in memory (FastStream's TestKafkaBroker) over real Postgres.

Kafka is faked; the database, the domain and the AML list are real. What these pin down is the
consumer's contract: one transaction per batch, offsets committed only after it commits, a
failed batch rewound rather than skipped, redeliveries that change nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.deadletter import H_DETAIL, H_REASON, H_TOPIC, DeadLetterWriter
from pago.common.enums import SessionStatus, TransactionStatus, TransferStage
from pago.common.events import (
    ChainScanned,
    SessionPaymentDetected,
    SessionUpdated,
    TransferObserved,
)
from pago.common.topics import CHAIN_TRANSFERS, DEADLETTER
from pago.devstack.kafka_mock import KafkaServer
from pago.matcher.aml.screener import Sender
from pago.matcher.consumer import TransferBatchHandler, build_broker
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import BatchOutcome, TransferMatcher
from tests.support.kafka import header_value, read_topic
from tests.support.matcher import (
    BASE_URL,
    USDT,
    FakeProvider,
    new_session,
    outbox_events,
    screener,
    session_row,
    stored_snapshot,
    transactions,
    transfer,
)

TP0 = TopicPartition(CHAIN_TRANSFERS, 0)
DLQ_LABELS = {"topic": CHAIN_TRANSFERS, "consumer": "pago-matcher-component"}


async def letters_with(kafka: KafkaServer, value: bytes) -> list[ConsumerRecord[bytes, bytes]]:
    """The dead letters carrying ``value`` (waits for one)."""
    return await read_topic(
        kafka.bootstrap_servers,
        DEADLETTER,
        until=lambda rs: any(r.value == value for r in rs),
        keep=lambda r: r.value == value,
    )


@dataclass
class RecordingPort:
    """Offsets as the handler moves them; ``seen_at_commit`` is what Postgres held then."""

    engine: AsyncEngine
    watch: str | None = None
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    rewinds: list[dict[TopicPartition, int]] = field(default_factory=list)
    seen_at_commit: list[int] = field(default_factory=list)
    rewind_fails: bool = False

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[ConsumerRecord[Any, Any]]:
        return []  # in memory, a poll's batch is all there is

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.watch is not None:
            self.seen_at_commit.append(len(await transactions(self.engine, self.watch)))
        self.commits.append(dict(offsets))

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.rewind_fails:
            raise RuntimeError("the consumer cannot seek")
        self.rewinds.append(dict(offsets))


class CrashingMatcher(TransferMatcher):
    """Does all the writes, then fails before the commit (a crash mid-batch)."""

    crashes = 0

    async def apply(
        self,
        conn: AsyncConnection,
        transfers: Sequence[TransferObserved],
        verdicts: Mapping[Sender, AmlVerdict],
        now: datetime,
        *,
        markers: Sequence[ChainScanned] = (),
    ) -> BatchOutcome:
        outcome = await super().apply(conn, transfers, verdicts, now, markers=markers)
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("the process died before COMMIT")
        return outcome


@dataclass
class Harness:
    broker: KafkaBroker
    offsets: RecordingPort
    matcher: CrashingMatcher
    provider: FakeProvider
    handler: TransferBatchHandler

    async def deliver(
        self, *transfers: TransferObserved | bytes, headers: dict[str, str] | None = None
    ) -> None:
        """One poll's batch, as the subscriber would receive it."""
        await self.broker.publish_batch(
            *(t if isinstance(t, bytes) else t.to_bytes() for t in transfers),
            topic=CHAIN_TRANSFERS,
            headers=headers,
        )


@pytest.fixture
async def deadletters(kafka: KafkaServer) -> AsyncIterator[DeadLetterWriter]:
    writer = DeadLetterWriter.create(kafka.bootstrap_servers, "pago-matcher-component")
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


@pytest.fixture
async def harness(db: AsyncEngine, deadletters: DeadLetterWriter) -> AsyncIterator[Harness]:
    offsets = RecordingPort(db)
    matcher = CrashingMatcher(checkout_base_url=BASE_URL)
    provider = FakeProvider()
    handler = TransferBatchHandler(
        db,
        screener(provider),
        matcher,
        deadletters=deadletters,
        first_backoff=0.001,
        max_backoff=0.001,
        port=lambda _consumer: offsets,
    )
    broker = build_broker(
        "localhost:9092", handler, batch_size=100, batch_timeout_ms=10, graceful_timeout=1
    )
    async with TestKafkaBroker(broker) as test_broker:
        yield Harness(test_broker, offsets, matcher, provider, handler)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestCredit:
    async def test_a_full_payment_settles_paid_with_its_fee(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)

        await harness.deliver(transfer(session, 10 * USDT))

        row = await session_row(db, session.id)
        assert row["status"] == SessionStatus.PAID
        assert (row["amount_received"], row["fee_amount"], row["net_amount"]) == (
            10 * USDT,
            1 * USDT,  # 0.5 % is 0.05, below the 1-token floor
            9 * USDT,
        )
        [tx] = await transactions(db, session.id)
        assert (tx["status"], tx["credited"]) == (TransactionStatus.CONFIRMED, True)
        [event] = await outbox_events(db, session.id)
        assert isinstance(event, SessionUpdated)
        assert event.previous_status is SessionStatus.PENDING
        assert event.session.status is SessionStatus.PAID
        assert (event.session.amount_received, event.session.net_amount) == ("10", "9")
        assert event.session.url == f"{BASE_URL}/{session.id}"
        # Built from the decision before the rows were written, it matches what they say.
        assert event.session.model_dump_json() == (
            (await stored_snapshot(db, session.id)).model_dump_json()
        )

    async def test_a_redelivery_changes_nothing(self, db: AsyncEngine, harness: Harness) -> None:
        session = await new_session(db)
        payment = transfer(session, 4 * USDT)

        await harness.deliver(payment, payment)  # twice in one poll
        await harness.deliver(payment)  # and again after a restart

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == (SessionStatus.UNDERPAID, 4 * USDT)
        assert len(await transactions(db, session.id)) == 1
        assert len(await outbox_events(db, session.id)) == 1

    async def test_an_evm_address_matches_in_any_case(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)

        await harness.deliver(transfer(session, 10 * USDT, to_address=session.pay_address.lower()))

        assert (await session_row(db, session.id))["status"] == SessionStatus.PAID

    async def test_each_change_in_one_batch_has_its_own_event(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        first = transfer(session, 3 * USDT, stage=TransferStage.DETECTED, tag="a")
        confirmed = transfer(session, 3 * USDT, tag="a")
        rest = transfer(session, 7 * USDT, tag="b")

        await harness.deliver(first, confirmed, rest)

        events = await outbox_events(db, session.id)
        assert [(type(e).__name__, e.session.status) for e in events] == [
            ("SessionPaymentDetected", SessionStatus.PENDING),
            ("SessionUpdated", SessionStatus.PENDING),
            ("SessionUpdated", SessionStatus.UNDERPAID),
            ("SessionUpdated", SessionStatus.PAID),
        ]
        assert isinstance(events[0], SessionPaymentDetected)
        assert events[0].session.transactions[0].status is TransactionStatus.CONFIRMING
        assert len({e.event_id for e in events}) == 4
        assert events[-1].session == await stored_snapshot(db, session.id)
        row = await session_row(db, session.id)
        assert (row["status"], row["version"]) == (SessionStatus.PAID, 3)


class TestAcknowledgement:
    async def test_offsets_are_committed_only_after_the_database_commit(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        harness.offsets.watch = session.id

        await harness.deliver(transfer(session, 10 * USDT))

        assert harness.offsets.commits == [{TP0: 1}]
        assert harness.offsets.seen_at_commit == [1], "committed before the row was visible"
        assert harness.offsets.rewinds == []

    async def test_a_failed_batch_is_rewound_not_skipped(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        payment = transfer(session, 10 * USDT)
        harness.matcher.crashes = 1
        failures = _metric("pago_matcher_batch_failures_total")

        await harness.deliver(payment)

        assert harness.offsets.commits == []
        assert harness.offsets.rewinds == [{TP0: 0}]
        assert await transactions(db, session.id) == [], "the failed batch left writes behind"
        assert await outbox_events(db, session.id) == []
        assert _metric("pago_matcher_batch_failures_total") == failures + 1

        await harness.deliver(payment)  # what the rewind makes the next poll return

        assert (await session_row(db, session.id))["amount_received"] == 10 * USDT
        assert harness.offsets.commits == [{TP0: 1}]

    async def test_a_batch_that_cannot_be_rewound_stops_the_consumer(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        halted: list[bool] = []
        harness.handler.on_halt = lambda: halted.append(True)
        harness.matcher.crashes = 1
        harness.offsets.rewind_fails = True

        await harness.deliver(transfer(session, 10 * USDT))
        await harness.deliver(transfer(session, 10 * USDT))  # read on: must not be taken

        assert halted == [True]
        assert harness.offsets.commits == [], "committed past a batch it could not rewind"
        assert await transactions(db, session.id) == []

    async def test_a_record_that_is_not_a_transfer_is_dead_lettered_then_committed(
        self, db: AsyncEngine, harness: Harness, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)
        garbage = f'{{"not": "a transfer {session.id}"}}'.encode()
        before = _metric("pago_deadletter_records_total", **DLQ_LABELS, reason="invalid")

        await harness.deliver(garbage, transfer(session, 10 * USDT))

        assert (await session_row(db, session.id))["status"] == SessionStatus.PAID
        [letter] = await letters_with(kafka, garbage)
        assert header_value(letter, H_REASON) == "invalid"
        assert header_value(letter, H_TOPIC) == CHAIN_TRANSFERS
        assert "missing" in (header_value(letter, H_DETAIL) or "")
        assert _metric("pago_deadletter_records_total", **DLQ_LABELS, reason="invalid") == (
            before + 1
        )
        assert harness.offsets.commits == [{TP0: 1}]

    async def test_an_added_field_is_read_not_refused(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        body = json.loads(transfer(session, 10 * USDT).to_bytes())
        body["memo"] = "a field of a newer watcher"

        await harness.deliver(json.dumps(body).encode())

        assert (await session_row(db, session.id))["status"] == SessionStatus.PAID

    @pytest.mark.parametrize(
        ("headers", "field_v", "reason"),
        [
            ({"v": "2", "event_type": "TransferObserved"}, 1, "unsupported_version"),
            ({"event_type": "TransferObserved"}, 2, "unsupported_version"),
            ({"event_type": "TransferRefunded"}, 1, "unknown_event_type"),
        ],
    )
    async def test_a_record_it_cannot_read_is_dead_lettered_not_guessed_at(
        self,
        db: AsyncEngine,
        harness: Harness,
        kafka: KafkaServer,
        headers: dict[str, str],
        field_v: int,
        reason: str,
    ) -> None:
        session = await new_session(db)
        value = transfer(session, 10 * USDT).model_copy(update={"v": field_v}).to_bytes()

        await harness.deliver(value, headers=headers)

        [letter] = await letters_with(kafka, value)
        assert header_value(letter, H_REASON) == reason
        assert header_value(letter, "event_type") == headers["event_type"]  # original headers
        assert (await session_row(db, session.id))["status"] == SessionStatus.PENDING
        assert harness.offsets.commits == [{TP0: 1}]

    async def test_a_poison_transfer_is_isolated_and_dead_lettered_the_rest_applies(
        self, db: AsyncEngine, harness: Harness, kafka: KafkaServer
    ) -> None:
        good, bad = await new_session(db), await new_session(db)
        # Valid as an event, but no NUMERIC(78,0) column holds it: Postgres refuses it every time.
        poison = transfer(bad, 10**80)
        before = _metric("pago_deadletter_records_total", **DLQ_LABELS, reason="poison")

        await harness.deliver(transfer(good, 4 * USDT), poison, transfer(good, 6 * USDT))
        assert harness.offsets.commits == [], "a failed batch must not commit"
        await harness.deliver(transfer(good, 4 * USDT), poison, transfer(good, 6 * USDT))

        [letter] = await letters_with(kafka, poison.to_bytes())
        assert header_value(letter, H_REASON) == "poison"
        detail = header_value(letter, H_DETAIL) or ""
        assert "SQLSTATE 22003" in detail
        assert "numeric field overflow" in detail
        assert (await session_row(db, good.id))["status"] == SessionStatus.PAID
        assert await transactions(db, bad.id) == []
        assert _metric("pago_deadletter_records_total", **DLQ_LABELS, reason="poison") == (
            before + 1
        )
        assert harness.offsets.commits == [{TP0: 1}]

    async def test_a_transfer_to_an_unknown_address_is_counted_and_committed(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        labels = {"stage": "confirmed", "result": "unknown_address"}
        before = _metric("pago_matcher_transfers_total", **labels)

        await harness.deliver(transfer(session, 5 * USDT, to_address="0x" + "00" * 20))

        assert _metric("pago_matcher_transfers_total", **labels) == before + 1
        assert await transactions(db, session.id) == []
        assert harness.offsets.commits == [{TP0: 1}]

    async def test_the_same_token_with_other_decimals_is_not_credited(
        self, db: AsyncEngine, harness: Harness
    ) -> None:
        session = await new_session(db)
        before = _metric("pago_matcher_invalid_transfers_total", reason="decimals_mismatch")

        await harness.deliver(transfer(session, 10 * 10**18, decimals=18))

        assert await transactions(db, session.id) == []
        assert (
            _metric("pago_matcher_invalid_transfers_total", reason="decimals_mismatch")
            == before + 1
        )

    async def test_no_verdict_means_no_credit(self, db: AsyncEngine, harness: Harness) -> None:
        session = await new_session(db)
        harness.provider.down = True

        await harness.deliver(transfer(session, 10 * USDT))

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == (SessionStatus.PENDING, 0)
        [tx] = await transactions(db, session.id)
        assert (tx["status"], tx["credited"]) == (TransactionStatus.CONFIRMING, False)
        assert harness.offsets.commits == [{TP0: 1}], "a held payment is recorded, so acked"
