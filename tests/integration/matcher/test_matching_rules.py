"""Every matching rule, end to end: a transfer produced to Kafka, the running matcher, Postgres,
and the events the outbox relay publishes to checkout.sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.enums import (
    ExceptionKind,
    ExceptionStatus,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)
from pago.common.events import SESSION_EVENT_ADAPTER, AnySessionEvent, SessionUpdated
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from pago.matcher.app import MatcherApp
from tests.support.goplus import FakeGoPlus
from tests.support.kafka import read_topic
from tests.support.matcher import (
    SANCTIONED_EVM,
    SANCTIONED_TRON,
    USDT,
    SessionSpec,
    eventually,
    exceptions,
    insert_merchant,
    insert_session,
    new_session,
    publish,
    scan,
    session_row,
    transactions,
    transfer,
)


async def settled(engine: AsyncEngine, session_id: str, **expect: Any) -> dict[str, Any]:
    """The session row once every ``expect``ed column has its value."""
    return await eventually(
        lambda: session_row(engine, session_id),
        lambda row: all(row[k] == v for k, v in expect.items()),
        what=f"{session_id} to reach {expect}",
    )


async def txs(engine: AsyncEngine, session_id: str, count: int) -> list[dict[str, Any]]:
    return await eventually(
        lambda: transactions(engine, session_id),
        lambda rows: len(rows) >= count,
        what=f"{count} transaction rows",
    )


async def cases(engine: AsyncEngine, session_id: str, count: int) -> list[dict[str, Any]]:
    return await eventually(
        lambda: exceptions(engine, session_id),
        lambda rows: len(rows) >= count,
        what=f"{count} payment exceptions",
    )


async def published(kafka: KafkaServer, session_id: str, count: int) -> list[AnySessionEvent]:
    """The session's events as they reached checkout.sessions (through the outbox relay)."""
    records = await read_topic(
        kafka.bootstrap_servers,
        CHECKOUT_SESSIONS,
        key_prefix=session_id,
        until=lambda recs: len(recs) >= count,
    )
    # One key, one partition: the records are in the order the matcher wrote them.
    return [SESSION_EVENT_ADAPTER.validate_json(r.value or b"") for r in records]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestCredit:
    async def test_an_exact_payment_is_paid_and_published(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT))

        row = await settled(db, session.id, status="Paid")
        assert (row["amount_received"], row["fee_amount"], row["net_amount"]) == (
            10 * USDT,
            USDT,
            9 * USDT,
        )
        [event] = await published(kafka, session.id, 1)
        assert isinstance(event, SessionUpdated)
        assert (event.session.status, event.session.fee_amount) == (SessionStatus.PAID, "1")
        assert event.session.transactions[0].status is TransactionStatus.CONFIRMED

    async def test_a_payment_within_tolerance_is_paid(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT - 10_000))  # 0.01 short

        await settled(db, session.id, status="Paid", amount_received=10 * USDT - 10_000)

    async def test_an_underpayment_extends_the_window_and_a_top_up_pays(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db, expires_at=datetime.now(UTC) + timedelta(minutes=5))

        await publish(producer, transfer(session, 4 * USDT))
        row = await settled(db, session.id, status="Underpaid")
        assert row["expires_at"] > datetime.now(UTC) + timedelta(hours=23)
        assert row["fee_amount"] == 0

        await publish(producer, transfer(session, 6 * USDT))
        await settled(db, session.id, status="Paid", amount_received=10 * USDT)

    async def test_an_overpayment_is_overpaid_with_the_fee_on_what_was_received(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        async with db.begin() as conn:
            merchant = await insert_merchant(conn, fee_rate=0.01, fee_floor=0.5)
        session = await new_session(db, merchant_id=merchant)

        await publish(producer, transfer(session, 250 * USDT))

        row = await settled(db, session.id, status="Overpaid")
        assert (row["fee_amount"], row["net_amount"]) == (2_500_000, 247_500_000)  # 1 %

    async def test_duplicates_are_credited_once(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)
        payment = transfer(session, 3 * USDT)
        later = transfer(session, 1 * USDT)

        await publish(producer, payment, payment, later, payment)

        await settled(db, session.id, amount_received=4 * USDT)
        assert len(await transactions(db, session.id)) == 2


class TestStages:
    async def test_a_detection_shows_confirming_then_the_confirmation_credits(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT, stage=TransferStage.DETECTED, tag="x"))
        [tx] = await txs(db, session.id, 1)
        assert (tx["status"], tx["credited"]) == (TransactionStatus.CONFIRMING, False)
        assert (await session_row(db, session.id))["amount_received"] == 0

        await publish(producer, transfer(session, 10 * USDT, tag="x"))
        await settled(db, session.id, status="Paid")
        events = await published(kafka, session.id, 3)
        assert [(e.type, e.session.status) for e in events] == [
            ("session.payment_detected", SessionStatus.PENDING),
            ("session.updated", SessionStatus.PENDING),
            ("session.updated", SessionStatus.PAID),
        ]

    async def test_a_revert_cancels_a_detection(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)

        await publish(
            producer,
            transfer(session, 10 * USDT, stage=TransferStage.DETECTED, tag="r"),
            transfer(session, 10 * USDT, stage=TransferStage.REVERTED, tag="r"),
        )

        await eventually(
            lambda: transactions(db, session.id),
            lambda rows: bool(rows) and rows[0]["status"] == TransactionStatus.REVERTED,
            what="the detection to be reverted",
        )
        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Pending", 0)

    async def test_a_revert_after_the_credit_raises_a_case_and_the_alert(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)
        alerts = metric("pago_matcher_reverted_credits_total")

        await publish(
            producer,
            transfer(session, 10 * USDT, tag="deep"),
            transfer(session, 10 * USDT, stage=TransferStage.REVERTED, tag="deep"),
        )

        [case] = await cases(db, session.id, 1)
        assert case["kind"] == ExceptionKind.REVERTED_CREDIT
        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Paid", 10 * USDT), "credit stands"
        assert metric("pago_matcher_reverted_credits_total") == alerts + 1


class TestParkedPayments:
    async def test_the_wrong_token_is_recorded_not_credited(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT, token=Token.USDC))

        [case] = await cases(db, session.id, 1)
        assert (case["kind"], case["token"], case["amount"]) == ("wrong_token", "USDC", 10 * USDT)
        assert (await session_row(db, session.id))["amount_received"] == 0

    async def test_a_late_payment_leaves_the_session_expired(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(
            db, status=SessionStatus.EXPIRED, expires_at=datetime.now(UTC) - timedelta(hours=1)
        )

        await publish(producer, transfer(session, 10 * USDT))

        [case] = await cases(db, session.id, 1)
        assert (case["kind"], case["status"]) == ("late_payment", ExceptionStatus.OPEN)
        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Expired", 0)

    async def test_money_after_paid_is_an_overpayment_case(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT), transfer(session, 2 * USDT))

        [case] = await cases(db, session.id, 1)
        assert (case["kind"], case["amount"]) == ("overpayment", 2 * USDT)
        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Paid", 10 * USDT)

    async def test_a_late_payment_goes_to_the_session_that_held_the_address(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        # An address leased again: the live session takes the money, not the expired one.
        async with db.begin() as conn:
            merchant = await insert_merchant(conn)
            old = await insert_session(
                conn,
                SessionSpec(
                    merchant_id=merchant,
                    status=SessionStatus.EXPIRED,
                    expires_at=datetime.now(UTC) - timedelta(days=2),
                    created_at=datetime.now(UTC) - timedelta(days=2),
                ),
            )
            new = await insert_session(
                conn, SessionSpec(merchant_id=merchant, pay_address=old.pay_address)
            )

        await publish(producer, transfer(new, 10 * USDT))

        await settled(db, new.id, status="Paid")
        assert await transactions(db, old.id) == []


class TestAml:
    async def test_a_sanctioned_sender_blocks_the_session(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)

        # Listed in EIP-55 case, sent here lower-cased: EVM compares case-insensitively.
        await publish(producer, transfer(session, 10 * USDT, sender=SANCTIONED_EVM.lower()))

        row = await settled(db, session.id, status="Blocked")
        assert row["amount_received"] == 0
        [tx] = await transactions(db, session.id)
        assert (tx["status"], tx["credited"]) == (TransactionStatus.BLOCKED, False)
        assert tx["aml_flags"] == ["sanctions_list:ofac_sdn_ETH"]
        [case] = await cases(db, session.id, 1)
        assert case["kind"] == ExceptionKind.BLOCKED_FUNDS
        [event] = await published(kafka, session.id, 1)
        assert event.session.status is SessionStatus.BLOCKED  # the notifier's session.blocked

    async def test_a_sanctioned_tron_sender_blocks_a_tron_session(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        tron = {"network": Network.TRON, "pay_address": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"}
        blocked = await new_session(db, **tron)
        await publish(producer, transfer(blocked, 10 * USDT, sender=SANCTIONED_TRON))
        await settled(db, blocked.id, status="Blocked")

    async def test_a_provider_hit_blocks_the_session(
        self,
        db: AsyncEngine,
        matcher: MatcherApp,
        producer: AIOKafkaProducer,
        provider: FakeGoPlus,
    ) -> None:
        session = await new_session(db, network=Network.BASE)
        mixer = "0x" + "77" * 20
        provider.flag(mixer, "mixer", "money_laundering")

        await publish(producer, transfer(session, 10 * USDT, sender=mixer))

        await settled(db, session.id, status="Blocked")
        [tx] = await transactions(db, session.id)
        assert tx["aml_flags"] == ["mixer", "money_laundering"]
        assert (mixer, "8453") in provider.requests  # BASE's chain id

    async def test_an_unscreened_payment_is_held_then_credited_when_the_provider_is_back(
        self,
        db: AsyncEngine,
        matcher: MatcherApp,
        producer: AIOKafkaProducer,
        provider: FakeGoPlus,
    ) -> None:
        session = await new_session(db)
        provider.mode = "down"

        await publish(producer, transfer(session, 10 * USDT, sender="0x" + "31" * 20))

        [case] = await cases(db, session.id, 1)
        assert (case["kind"], case["status"]) == ("aml_unavailable", "open")
        [tx] = await transactions(db, session.id)
        assert (tx["status"], tx["credited"]) == (TransactionStatus.CONFIRMING, False)
        assert (await session_row(db, session.id))["status"] == "Pending"

        provider.mode = "ok"  # the re-screening pass finds it answering again

        await settled(db, session.id, status="Paid")
        [case] = await exceptions(db, session.id)
        assert case["status"] == ExceptionStatus.DISMISSED
        assert "clear" in (case["resolution_note"] or "")


class TestScheduler:
    async def test_the_running_matcher_expires_sessions_and_publishes_it(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db, expires_at=datetime.now(UTC) - timedelta(seconds=1))

        # The watcher proves the chain silent past expires_at on every partition.
        await scan(producer, datetime.now(UTC))
        await settled(db, session.id, status="Expired")

        [event] = await published(kafka, session.id, 1)
        assert isinstance(event, SessionUpdated)
        assert (event.previous_status, event.session.status) == (
            SessionStatus.PENDING,
            SessionStatus.EXPIRED,
        )
