"""Builders for notifier tests: merchants and endpoints as rows, session events on Kafka.

The notifier never creates sessions, merchants or endpoints; the api and the matcher do. Here
they are written directly, with plausible values wherever a test does not care.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import merchants, webhook_deliveries, webhook_endpoints
from pago.common.enums import (
    CardProvider,
    CardSessionStatus,
    ChainFamily,
    DeliveryStatus,
    ExceptionKind,
    Mode,
    Network,
    SessionStatus,
    Token,
    WebhookEventType,
)
from pago.common.events import (
    AnySessionEvent,
    CardAmountSnapshot,
    CardSessionEvent,
    CardSessionEventType,
    CardSessionSnapshot,
    PricingSnapshot,
    SessionCreated,
    SessionPaymentDetected,
    SessionPaymentReverted,
    SessionResolved,
    SessionSnapshot,
    SessionUpdated,
)
from pago.common.topics import CARD_SESSIONS, CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.notifier.guard import system_resolver
from pago.notifier.settings import NotifierSettings

DEFAULT_EVENTS = [
    WebhookEventType.SESSION_COMPLETED,
    WebhookEventType.SESSION_EXPIRED,
    WebhookEventType.SESSION_BLOCKED,
    WebhookEventType.SESSION_RESOLVED,
    WebhookEventType.CARD_SESSION_COMPLETED,
    WebhookEventType.CARD_SESSION_FAILED,
    WebhookEventType.CARD_SESSION_EXPIRED,
]
ALL_EVENTS = list(WebhookEventType)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def seed_merchant(engine: AsyncEngine, name: str = "Acme Shop") -> str:
    merchant_id = f"mer_{secrets.token_hex(8)}"
    async with engine.begin() as conn:
        await conn.execute(insert(merchants).values(id=merchant_id, name=name))
    return merchant_id


async def seed_endpoint(
    engine: AsyncEngine,
    merchant_id: str,
    url: str,
    *,
    mode: Mode = Mode.TEST,
    events: Sequence[WebhookEventType] = DEFAULT_EVENTS,
    secret: str | None = None,
    previous_secret: str | None = None,
    previous_expires_in: timedelta | None = None,
) -> tuple[str, str]:
    """An endpoint created a second ago; returns ``(id, secret)``."""
    endpoint_id = f"we_{secrets.token_hex(8)}"
    secret = secret or new_secret()
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_endpoints).values(
                id=endpoint_id,
                merchant_id=merchant_id,
                mode=mode.value,
                url=url,
                enabled_events=[e.value for e in events],
                secret=secret,
                previous_secret=previous_secret,
                previous_secret_expires_at=(
                    datetime.now(UTC) + previous_expires_in if previous_expires_in else None
                ),
                created_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    return endpoint_id, secret


def snapshot(session_id: str, status: SessionStatus, *, mode: Mode = Mode.TEST) -> SessionSnapshot:
    now = datetime.now(UTC).replace(microsecond=0)
    return SessionSnapshot(
        id=session_id,
        livemode=mode is Mode.LIVE,
        url=f"https://pay.example.test/checkout/{session_id}",
        status=status,
        amount="10.5",
        amount_expected="10.5",
        amount_received="10.5" if status in (SessionStatus.PAID, SessionStatus.OVERPAID) else "0",
        fee_amount="0",
        net_amount="0",
        currency=Token.USDT,
        currency_contract="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
        network=Network.TRON,
        chain_family=ChainFamily.TRON,
        merchant_name="Acme Shop — café",
        merchant_logo_url=None,
        pay_address="TQFEyGNzHZAJmebJUvsoZvJghHm2yNhXAD",
        client_reference_id="order-1",
        pricing=PricingSnapshot(currency="USDT", amount="10.50", exchange_rate="1.00000000"),
        success_url="https://acme.example/thanks",
        cancel_url=None,
        sub_merchant_code=None,
        transactions=(),
        expires_at=now + timedelta(minutes=30),
        created_at=now,
    )


def updated(
    merchant_id: str,
    status: SessionStatus,
    previous: SessionStatus | None = SessionStatus.PENDING,
    *,
    session_id: str | None = None,
    mode: Mode = Mode.TEST,
) -> SessionUpdated:
    sid = session_id or f"cs_{secrets.token_hex(12)}"
    return SessionUpdated(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        session=snapshot(sid, status, mode=mode),
        previous_status=previous,
    )


def created(merchant_id: str, *, mode: Mode = Mode.TEST) -> SessionCreated:
    sid = f"cs_{secrets.token_hex(12)}"
    return SessionCreated(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        session=snapshot(sid, SessionStatus.PENDING, mode=mode),
    )


def detected(merchant_id: str, *, mode: Mode = Mode.TEST) -> SessionPaymentDetected:
    sid = f"cs_{secrets.token_hex(12)}"
    return SessionPaymentDetected(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        session=snapshot(sid, SessionStatus.PENDING, mode=mode),
        tx_hash="ab" * 32,
    )


def resolved(merchant_id: str, *, mode: Mode = Mode.TEST) -> SessionResolved:
    sid = f"cs_{secrets.token_hex(12)}"
    return SessionResolved(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        session=snapshot(sid, SessionStatus.EXPIRED, mode=mode),
        exception_id="pex_1",
        exception_kind=ExceptionKind.LATE_PAYMENT,
        tx_hash="cd" * 32,
        log_index=0,
    )


def reverted(
    merchant_id: str, *, session_id: str | None = None, mode: Mode = Mode.TEST
) -> SessionPaymentReverted:
    """A credited transfer of a ``Paid`` session reverted by a deep reorg."""
    sid = session_id or f"cs_{secrets.token_hex(12)}"
    return SessionPaymentReverted(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        session=snapshot(sid, SessionStatus.PAID, mode=mode),
        tx_hash="ef" * 32,
        log_index=2,
    )


def mixed_events(merchant_id: str, *, mode: Mode = Mode.TEST) -> list[AnySessionEvent]:
    """One of every kind: three default webhooks, two opt-in ones and two non-webhooks."""
    return [
        created(merchant_id, mode=mode),
        updated(merchant_id, SessionStatus.PAID, mode=mode),
        updated(merchant_id, SessionStatus.EXPIRED, mode=mode),
        updated(merchant_id, SessionStatus.UNDERPAID, mode=mode),
        updated(merchant_id, SessionStatus.UNDERPAID, SessionStatus.UNDERPAID, mode=mode),
        detected(merchant_id, mode=mode),
        resolved(merchant_id, mode=mode),
    ]


async def publish(producer: AIOKafkaProducer, events: Sequence[AnySessionEvent]) -> None:
    """As the outbox relay does: keyed by session id, acknowledged by the broker."""
    acks = [
        await producer.send(
            CHECKOUT_SESSIONS,
            value=event.to_bytes(),
            key=event.session_id.encode(),
            headers=[("event_type", event.type.encode())],
        )
        for event in events
    ]
    for ack in acks:
        await ack


CARD_STATUS: dict[CardSessionEventType, CardSessionStatus] = {
    "card_session.created": CardSessionStatus.PENDING,
    "card_session.completed": CardSessionStatus.COMPLETED,
    "card_session.failed": CardSessionStatus.FAILED,
    "card_session.expired": CardSessionStatus.EXPIRED,
    "card_session.cancelled": CardSessionStatus.CANCELLED,
}
"""The status a card session event's snapshot shows."""


def card_event(
    merchant_id: str,
    kind: CardSessionEventType = "card_session.completed",
    *,
    previous: CardSessionStatus | None = CardSessionStatus.PENDING,
    mode: Mode = Mode.TEST,
    amount: CardAmountSnapshot | None = None,
) -> CardSessionEvent:
    """A card session event as the api's outbox writes it; the seed's AUD order by default."""
    sid = str(uuid.uuid4())
    now = datetime.now(UTC).replace(microsecond=0)
    status = CARD_STATUS[kind]
    return CardSessionEvent(
        type=kind,
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=sid,
        merchant_id=merchant_id,
        mode=mode,
        occurred_at=datetime.now(UTC),
        previous_status=None if kind == "card_session.created" else previous,
        session=CardSessionSnapshot(
            session_id=sid,
            order_reference="ORD-2024-001",
            status=status,
            amount=amount
            or CardAmountSnapshot(currency="AUD", exponent=2, total=14076, shipping=995, tax=1181),
            provider=CardProvider.STRIPE,
            provider_reference=f"cs_test_{secrets.token_hex(8)}",
            checkout_url="https://checkout.stripe.com/pay/cs_test_123",
            expires_at=now + timedelta(hours=1),
            created_at=now - timedelta(minutes=5),
            updated_at=now,
        ),
    )


def card_events(merchant_id: str, *, mode: Mode = Mode.TEST) -> list[CardSessionEvent]:
    """One of every type: three default webhooks, two opt-in ones."""
    return [
        card_event(merchant_id, "card_session.created", mode=mode),
        card_event(merchant_id, "card_session.completed", mode=mode),
        card_event(merchant_id, "card_session.failed", mode=mode),
        card_event(merchant_id, "card_session.expired", mode=mode),
        card_event(merchant_id, "card_session.cancelled", mode=mode),
    ]


async def publish_cards(producer: AIOKafkaProducer, events: Sequence[CardSessionEvent]) -> None:
    """As the outbox relay does: keyed by session id, ``event_type`` the class name."""
    acks = [
        await producer.send(
            CARD_SESSIONS,
            value=event.to_bytes(),
            key=event.session_id.encode(),
            headers=[("v", b"1"), ("event_type", type(event).__name__.encode())],
        )
        for event in events
    ]
    for ack in acks:
        await ack


async def deliveries(engine: AsyncEngine, endpoint_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.created_at)
        )
        return [dict(r) for r in rows.mappings()]


async def endpoint_row(engine: AsyncEngine, endpoint_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = await conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
        )
        return dict(row.mappings().one())


async def set_endpoint(engine: AsyncEngine, endpoint_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**values)
        )


async def settle(engine: AsyncEngine, endpoint_id: str, count: int, timeout: float = 10) -> None:
    """Until ``count`` deliveries of the endpoint are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries(engine, endpoint_id)
        done = [r for r in rows if r["status"] != DeliveryStatus.PENDING]
        if len(done) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)} of {count} deliveries settled: {rows}")
        await asyncio.sleep(0.05)


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
