"""Issue 11 on the running matcher (real Kafka protocol, Postgres, relay): dust never moves a
session, expiry waits for the chain to be proven silent (or the grace bound), an in-time payment
still credits, and a reverted credit is published as ``session.payment_reverted``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import chain_progress, ignored_transfers
from pago.common.enums import SessionStatus, TransactionStatus, TransferStage
from pago.common.events import (
    SESSION_EVENT_ADAPTER,
    AnySessionEvent,
    SessionPaymentReverted,
    SessionUpdated,
)
from pago.common.networks import load_registry
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from pago.matcher import jobs
from pago.matcher.app import MatcherApp
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.support.kafka import read_topic
from tests.support.matcher import (
    BASE_URL,
    SANCTIONED_EVM,
    TRANSFER_PARTITIONS,
    USDT,
    eventually,
    exceptions,
    new_session,
    publish,
    scan,
    session_row,
    transactions,
    transfer,
)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def published(
    kafka: KafkaServer, session_id: str, until: Any, *, timeout: float = 30.0
) -> list[AnySessionEvent]:
    """The session's events on checkout.sessions once ``until(events)`` holds."""

    def decode(records: list[Any]) -> list[AnySessionEvent]:
        return [SESSION_EVENT_ADAPTER.validate_json(r.value or b"") for r in records]

    records = await read_topic(
        kafka.bootstrap_servers,
        CHECKOUT_SESSIONS,
        key_prefix=session_id,
        until=lambda recs: until(decode(recs)),
        timeout=timeout,
    )
    return decode(records)


def kinds(events: list[AnySessionEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.session.status.value) for e in events]


async def ignored_rows(engine: AsyncEngine, session_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(ignored_transfers)
            .where(ignored_transfers.c.session_id == session_id)
            .order_by(ignored_transfers.c.id)
        )
        return [dict(r) for r in result.mappings()]


async def progress(engine: AsyncEngine) -> dict[int, datetime]:
    async with engine.connect() as conn:
        result = await conn.execute(select(chain_progress))
        return {int(r["partition"]): r["block_time"] for r in result.mappings()}


async def settled(engine: AsyncEngine, session_id: str, **expect: Any) -> dict[str, Any]:
    return await eventually(
        lambda: session_row(engine, session_id),
        lambda row: all(row[k] == v for k, v in expect.items()),
        what=f"{session_id} to reach {expect}",
    )


async def scanned_to(engine: AsyncEngine, block_time: datetime) -> None:
    """Wait until the matcher has consumed a marker at ``block_time`` on every partition."""
    await eventually(
        lambda: progress(engine),
        lambda rows: (
            len(rows) == TRANSFER_PARTITIONS and all(t >= block_time for t in rows.values())
        ),
        what=f"progress markers at {block_time} on every partition",
    )


async def expire_now(engine: AsyncEngine) -> int:
    """One expiry pass with the production grace (1 h), beside the matcher's own loop."""
    return await jobs.expire_due(
        engine, now=datetime.now(UTC), limit=100, checkout_base_url=BASE_URL
    )


class TestMinimumCredit:
    async def test_dust_is_recorded_for_audit_and_moves_nothing(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db, expires_at=datetime.now(UTC) + timedelta(minutes=10))
        before = await session_row(db, session.id)
        counted = metric(
            "pago_matcher_ignored_transfers_total", network="ETHEREUM", reason="below_min_credit"
        )
        dust = transfer(session, 1, tag="dust")  # 1 base unit
        zero = transfer(session, 0, stage=TransferStage.DETECTED, tag="zero")
        short = transfer(session, USDT // 100 - 1, tag="short")  # 0.009999 < 0.01

        await publish(producer, dust, zero, short)

        rows = await eventually(
            lambda: ignored_rows(db, session.id),
            lambda r: len(r) == 3,
            what="three ignored transfers",
        )
        assert [(r["amount_raw"], r["stage"], r["reason"]) for r in rows] == [
            (1, "confirmed", "below_min_credit"),
            (0, "detected", "below_min_credit"),
            (USDT // 100 - 1, "confirmed", "below_min_credit"),
        ]
        assert {(r["network"], r["mode"], r["decimals"]) for r in rows} == {("ETHEREUM", "test", 6)}
        after = await session_row(db, session.id)
        assert (after["status"], after["amount_received"], after["version"]) == (
            "Pending",
            0,
            before["version"],
        )
        assert after["expires_at"] == before["expires_at"]
        assert await transactions(db, session.id) == []

        # Redelivered dust is recorded once; the real payment afterwards is the only news.
        await publish(producer, dust, zero, transfer(session, 10 * USDT))
        events = await published(kafka, session.id, lambda evs: len(evs) >= 1)
        assert kinds(events) == [("session.updated", "Paid")]
        assert len(await ignored_rows(db, session.id)) == 3
        assert (
            metric(
                "pago_matcher_ignored_transfers_total",
                network="ETHEREUM",
                reason="below_min_credit",
            )
            == counted + 3
        )

    async def test_a_zero_value_transfer_naming_a_sanctioned_sender_never_blocks(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)
        griefing = transfer(session, 0, sender=SANCTIONED_EVM)

        await publish(producer, griefing, transfer(session, 10 * USDT))

        await settled(db, session.id, status="Paid", amount_received=10 * USDT)
        assert await exceptions(db, session.id) == []
        [row] = await ignored_rows(db, session.id)
        assert row["from_address"] == SANCTIONED_EVM
        events = await published(kafka, session.id, lambda evs: len(evs) >= 1)
        assert kinds(events) == [("session.updated", "Paid")]

    async def test_the_registry_sets_the_minimum_per_network_and_token(
        self, db: AsyncEngine, tmp_path: Path
    ) -> None:
        chains = tmp_path / "chains.toml"
        chains.write_text('[networks.ETHEREUM.test.tokens.USDT]\nmin_credit = "1"\n')
        matcher = TransferMatcher(checkout_base_url=BASE_URL, registry=load_registry(chains))
        session = await new_session(db)
        half = transfer(session, USDT // 2, sender=SANCTIONED_EVM)
        one = transfer(session, USDT)

        assert matcher.senders_to_screen([half, one]) == [sender(one)]
        async with db.begin() as conn:
            outcome = await matcher.apply(
                conn, [half, one], {sender(one): AmlVerdict.clear()}, datetime.now(UTC)
            )
        outcome.committed()

        row = await session_row(db, session.id)
        assert (row["status"], row["amount_received"]) == ("Underpaid", USDT)
        assert [r["amount_raw"] for r in await ignored_rows(db, session.id)] == [USDT // 2]
        assert outcome.ignored == [("ETHEREUM", "below_min_credit")]


class TestProgressMarkers:
    async def test_each_partition_keeps_its_newest_marker(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        newer = datetime.now(UTC).replace(microsecond=0)
        older = newer - timedelta(minutes=5)
        newest = newer + timedelta(minutes=5)

        await scan(producer, newer, block_number=2_000)
        await scanned_to(db, newer)
        # A replayed older round, then a newer marker on partition 0 behind it: once that one
        # is stored, the older round has been consumed too (same partition, in order).
        await scan(producer, older, block_number=1_000)
        await scan(producer, newest, block_number=3_000, partitions=[0])

        rows = await eventually(
            lambda: progress(db), lambda r: r.get(0) == newest, what="partition 0's new marker"
        )
        assert {p: t for p, t in rows.items() if p != 0} == {
            p: newer for p in range(1, TRANSFER_PARTITIONS)
        }


class TestExpiry:
    async def test_no_progress_past_expires_at_keeps_it_pending_until_markers_pass_it(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        expires_at = datetime.now(UTC) - timedelta(minutes=1)
        session = await new_session(db, expires_at=expires_at)
        lag_before = metric(
            "pago_matcher_expiry_lag_seconds_count", network="ETHEREUM", mode="test"
        )

        assert await expire_now(db) == 0  # no marker at all
        await scan(producer, expires_at - timedelta(seconds=30))
        await scanned_to(db, expires_at - timedelta(seconds=30))
        assert await expire_now(db) == 0  # the chain is scanned only up to before expires_at
        late = datetime.now(UTC)
        await scan(producer, late, partitions=range(1, TRANSFER_PARTITIONS))
        await eventually(
            lambda: progress(db),
            lambda r: sum(t >= late for t in r.values()) == TRANSFER_PARTITIONS - 1,
            what="markers on every partition but one",
        )
        assert await expire_now(db) == 0  # partition 0 may still hold a payment
        assert (await session_row(db, session.id))["status"] == "Pending"

        await scan(producer, late, partitions=[0])

        row = await settled(db, session.id, status="Expired")
        assert row["timed_out"]
        events = await published(kafka, session.id, lambda evs: len(evs) >= 1)
        assert kinds(events) == [("session.updated", "Expired")]
        assert (
            metric("pago_matcher_expiry_lag_seconds_count", network="ETHEREUM", mode="test")
            == lag_before + 1
        )

    async def test_a_payment_detected_in_time_and_confirmed_after_the_tick_pays(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        expires_at = datetime.now(UTC) - timedelta(minutes=1)
        session = await new_session(db, expires_at=expires_at)
        mined = expires_at - timedelta(seconds=20)  # in time, 12 confirmations to go

        await publish(
            producer,
            transfer(session, 10 * USDT, stage=TransferStage.DETECTED, tag="p", block_time=mined),
        )
        await scan(producer, datetime.now(UTC))
        await scanned_to(db, expires_at)
        [tx] = await transactions(db, session.id)
        assert (tx["status"], tx["block_time"]) == (TransactionStatus.CONFIRMING, mined)

        assert await expire_now(db) == 0  # the expiry tick: the chain is silent but for it
        assert (await session_row(db, session.id))["status"] == "Pending"

        await publish(producer, transfer(session, 10 * USDT, tag="p", block_time=mined))

        await settled(db, session.id, status="Paid", amount_received=10 * USDT)
        assert await exceptions(db, session.id) == []
        events = await published(
            kafka, session.id, lambda evs: any(e.session.status.value == "Paid" for e in evs)
        )
        assert kinds(events) == [
            ("session.payment_detected", "Pending"),
            ("session.updated", "Pending"),
            ("session.updated", "Paid"),
        ]
        assert await expire_now(db) == 0

    async def test_the_grace_bound_expires_it_without_any_marker(
        self, db: AsyncEngine, matcher: MatcherApp, kafka: KafkaServer
    ) -> None:
        session = await new_session(
            db, expires_at=datetime.now(UTC) - timedelta(hours=1, seconds=5)
        )

        row = await settled(db, session.id, status="Expired")

        assert row["timed_out"]
        [event] = await published(kafka, session.id, lambda evs: len(evs) >= 1)
        assert isinstance(event, SessionUpdated)
        assert (event.previous_status, event.session.status) == (
            SessionStatus.PENDING,
            SessionStatus.EXPIRED,
        )

    async def test_the_grace_bound_expires_a_stuck_payment_and_its_confirmation_still_pays(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        expires_at = datetime.now(UTC) - timedelta(minutes=30)
        session = await new_session(db, expires_at=expires_at)
        mined = expires_at - timedelta(minutes=1)
        await publish(
            producer,
            transfer(session, 4 * USDT, stage=TransferStage.DETECTED, tag="s", block_time=mined),
        )
        await eventually(
            lambda: transactions(db, session.id), lambda r: len(r) == 1, what="the detection"
        )
        grace = timedelta(minutes=10)  # a deployment with a short grace

        expired = await jobs.expire_due(
            db, now=datetime.now(UTC), limit=100, checkout_base_url=BASE_URL, grace=grace
        )
        assert expired == 1

        await publish(producer, transfer(session, 4 * USDT, tag="s", block_time=mined))

        row = await settled(db, session.id, status="Underpaid", amount_received=4 * USDT)
        assert not row["timed_out"]
        assert row["expires_at"] > datetime.now(UTC) + timedelta(hours=23)
        assert await exceptions(db, session.id) == []
        events = await published(kafka, session.id, lambda evs: len(evs) >= 4)
        assert kinds(events)[-2:] == [
            ("session.updated", "Expired"),
            ("session.updated", "Underpaid"),
        ]

    async def test_a_payment_made_after_expires_at_is_still_late(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        expires_at = datetime.now(UTC) - timedelta(hours=2)
        session = await new_session(db, expires_at=expires_at)
        await settled(db, session.id, status="Expired")

        await publish(
            producer,
            transfer(session, 10 * USDT, block_time=expires_at + timedelta(seconds=1)),
        )

        [case] = await eventually(
            lambda: exceptions(db, session.id), lambda r: len(r) == 1, what="a late payment"
        )
        assert case["kind"] == "late_payment"
        assert (await session_row(db, session.id))["status"] == "Expired"


class TestPaymentReverted:
    async def test_a_reverted_credit_is_published_as_payment_reverted(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer, kafka: KafkaServer
    ) -> None:
        session = await new_session(db)
        paid = transfer(session, 10 * USDT, tag="reorg", log_index=3)

        await publish(
            producer,
            paid,
            transfer(session, 10 * USDT, tag="reorg", log_index=3, stage=TransferStage.REVERTED),
        )

        events = await published(
            kafka, session.id, lambda evs: any(e.type == "session.payment_reverted" for e in evs)
        )
        assert [e.type for e in events] == [
            "session.updated",
            "session.payment_reverted",
            "session.updated",
        ]
        reverted = events[1]
        assert isinstance(reverted, SessionPaymentReverted)
        assert (reverted.tx_hash, reverted.log_index) == (paid.tx_hash.lower(), 3)
        assert reverted.session.status is SessionStatus.PAID  # the credit stands
        assert [t.status for t in reverted.session.transactions] == [TransactionStatus.REVERTED]
        assert reverted.event_id != events[2].event_id
        [case] = await exceptions(db, session.id)
        assert case["kind"] == "reverted_credit"
