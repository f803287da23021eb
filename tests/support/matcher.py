"""Builders and readers for matcher tests: rows inserted with SQL, events read back.

Sessions are inserted directly (the matcher never creates them); every value a test does not
care about has a plausible default.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.db.schema import (
    checkout_sessions,
    merchants,
    outbox,
    payment_exceptions,
    session_transactions,
)
from pago.common.enums import Mode, Network, SessionStatus, Token, TransferStage
from pago.common.events import (
    SESSION_EVENT_ADAPTER,
    AnySessionEvent,
    ChainScanned,
    SessionSnapshot,
    TransferObserved,
)
from pago.common.sessions import build_session_snapshot
from pago.common.topics import CHAIN_TRANSFERS, TOPICS, cursor_key, transfer_key
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.matcher.aml.provider import ProviderUnavailable, RiskProvider
from pago.matcher.aml.sanctions import SanctionsList
from pago.matcher.aml.screener import Screener
from pago.matcher.domain import AmlVerdict
from pago.matcher.settings import MatcherSettings

USDT = 10**6
"""One 6-decimal token in base units."""
AML_DIR = Path(os.environ.get("PAGO_TEST_AML_DIR", "/work/shared/data/aml"))
"""The real OFAC snapshot (one address per line, one file per asset); never copied here."""
SANCTIONED_EVM = "0x01e2919679362dFBC9ee1644Ba9C6da6D6245BB1"
"""First entry of ofac_sdn_ETH.txt, in its EIP-55 spelling."""
SANCTIONED_TRON = "TBHTJqAy4DhHhmT3dNceJYNRz4SdLofLre"
"""First entry of ofac_sdn_TRX.txt."""
CLEAN_EVM = "0x" + "5a" * 20
BASE_URL = "https://pay.example.test/checkout"

_counter = itertools.count(1)


def aml_dir() -> Path:
    """The sanctions snapshot, or a test failure that says where it was looked for."""
    if not (AML_DIR / "ofac_sdn_ETH.txt").is_file():
        pytest.fail(
            f"the OFAC snapshot is missing: expected {AML_DIR}/ofac_sdn_*.txt "
            "(set PAGO_TEST_AML_DIR to its directory)"
        )
    return AML_DIR


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter):06d}{os.getpid() % 10_000:04d}"


def evm_address(tag: str) -> str:
    """A deterministic, mixed-case (EIP-55-looking) EVM address for ``tag``."""
    digest = hashlib.sha256(tag.encode()).hexdigest()[:40]
    return "0x" + "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(digest))


def tx_hash(tag: str) -> str:
    return "0x" + hashlib.sha256(f"tx:{tag}".encode()).hexdigest()


async def insert_merchant(
    conn: AsyncConnection, merchant_id: str | None = None, **over: Any
) -> str:
    merchant_id = merchant_id or unique("mer_")
    await conn.execute(
        insert(merchants).values(id=merchant_id, name=over.pop("name", "Acme"), **over)
    )
    return merchant_id


@dataclass
class SessionSpec:
    merchant_id: str
    network: Network = Network.ETHEREUM
    mode: Mode = Mode.TEST
    currency: Token = Token.USDT
    decimals: int = 6
    amount_expected: int = 10 * USDT
    status: SessionStatus = SessionStatus.PENDING
    pay_address: str = ""
    expires_at: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(hours=1))
    created_at: datetime | None = None
    id: str = ""


async def insert_session(conn: AsyncConnection, spec: SessionSpec) -> SessionSpec:
    spec.id = spec.id or unique("cs_")
    spec.pay_address = spec.pay_address or evm_address(spec.id)
    values: dict[str, Any] = {
        "id": spec.id,
        "merchant_id": spec.merchant_id,
        "mode": spec.mode.value,
        "status": spec.status.value,
        "network": spec.network.value,
        "currency": spec.currency.value,
        "currency_contract": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
        "decimals": spec.decimals,
        "amount_expected": spec.amount_expected,
        "pay_address": spec.pay_address,
        "pricing_currency": spec.currency.value,
        "pricing_amount": str(Decimal(spec.amount_expected).scaleb(-spec.decimals)),
        "exchange_rate": Decimal(1),
        "expires_at": spec.expires_at,
    }
    if spec.created_at is not None:
        values["created_at"] = spec.created_at
    await conn.execute(insert(checkout_sessions).values(**values))
    return spec


async def new_session(engine: AsyncEngine, **over: Any) -> SessionSpec:
    async with engine.begin() as conn:
        merchant_id = over.pop("merchant_id", None) or await insert_merchant(conn)
        return await insert_session(conn, SessionSpec(merchant_id=merchant_id, **over))


def transfer(
    session: SessionSpec,
    amount: int,
    *,
    stage: TransferStage = TransferStage.CONFIRMED,
    tag: str | None = None,
    log_index: int = 0,
    token: Token | None = None,
    decimals: int | None = None,
    sender: str = CLEAN_EVM,
    to_address: str | None = None,
    confirmations: int = 12,
    block_time: datetime | None = None,
) -> TransferObserved:
    """A transfer paying ``session`` (identity from ``tag``: equal tags are the same transfer)."""
    tag = tag or unique("t")
    return TransferObserved(
        network=session.network,
        mode=session.mode,
        token=token or session.currency,
        contract="0xdAC17F958D2ee523a2206206994597C13D831ec7",
        tx_hash=tx_hash(tag),
        log_index=log_index,
        block_number=100,
        block_hash="0x" + "bb" * 32,
        from_address=sender,
        to_address=to_address or session.pay_address,
        amount_raw=amount,
        decimals=session.decimals if decimals is None else decimals,
        confirmations=confirmations,
        stage=stage,
        observed_at=datetime.now(UTC),
        block_time=block_time,
    )


async def session_row(engine: AsyncEngine, session_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(checkout_sessions).where(checkout_sessions.c.id == session_id)
        )
        return dict(result.mappings().one())


async def transactions(engine: AsyncEngine, session_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(session_transactions)
            .where(session_transactions.c.session_id == session_id)
            .order_by(session_transactions.c.id)
        )
        return [dict(r) for r in result.mappings()]


async def exceptions(engine: AsyncEngine, session_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(payment_exceptions)
            .where(payment_exceptions.c.session_id == session_id)
            .order_by(payment_exceptions.c.created_at, payment_exceptions.c.kind)
        )
        return [dict(r) for r in result.mappings()]


async def stored_snapshot(engine: AsyncEngine, session_id: str) -> SessionSnapshot:
    """The session object as the api builds it from what is stored (validated)."""
    row = await session_row(engine, session_id)
    async with engine.connect() as conn:
        merchant = (
            (await conn.execute(select(merchants).where(merchants.c.id == row["merchant_id"])))
            .mappings()
            .one()
        )
    return build_session_snapshot(
        row,
        merchant=merchant,
        transactions=await transactions(engine, session_id),
        checkout_base_url=BASE_URL,
    )


async def outbox_events(engine: AsyncEngine, session_id: str) -> list[AnySessionEvent]:
    """The events waiting in the outbox for ``session_id``, in write order."""
    async with engine.connect() as conn:
        result = await conn.execute(
            select(outbox.c.value).where(outbox.c.key == session_id).order_by(outbox.c.id)
        )
        return [SESSION_EVENT_ADAPTER.validate_json(v) for (v,) in result]


async def clear_outbox(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM outbox"))


class FakeProvider:
    """A risk provider that answers from a table (the true boundary of AML level 2)."""

    name = "fake"

    def __init__(self, hits: dict[str, tuple[str, ...]] | None = None) -> None:
        self.hits = {k.lower(): v for k, v in (hits or {}).items()}
        self.down = False
        self.calls: list[tuple[Network, str]] = []

    async def check(self, network: Network, address: str) -> AmlVerdict:
        self.calls.append((network, address))
        if self.down:
            raise ProviderUnavailable("down for the test")
        flags = self.hits.get(address.lower())
        return AmlVerdict.hit(*flags) if flags else AmlVerdict.clear()


def screener(provider: RiskProvider | None = None, *, with_list: bool = True) -> Screener:
    sanctions = SanctionsList(aml_dir() if with_list else None)
    return Screener(sanctions, provider, attempts=2, backoff=0.0)


def statuses(events: Sequence[AnySessionEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.session.status.value) for e in events]


T = TypeVar("T")


def matcher_settings(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, **over: object
) -> MatcherSettings:
    values: dict[str, object] = {
        "database_url": database.url,
        "redis_url": redis_server.url,
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "env": "test",
        "http_port": 0,
        "batch_timeout_ms": 20,
        "retry_max_backoff": 0.5,
        "shutdown_timeout": 5.0,
        "expiry_interval": 0.2,
        "resolution_interval": 0.05,
        "aml_retry_interval": 0.2,
        "aml_list_path": str(aml_dir()),
        "aml_provider_attempts": 2,
        "aml_provider_backoff": 0.01,
        "aml_provider_timeout": 0.5,
        "checkout_base_url": BASE_URL,
        # The mock broker ignores a leaving member until its session times out: with the
        # production 10 s, the next process of a group would wait ~40 s to join. A group of
        # our own also keeps any other test's matcher process out of the way.
        "session_timeout_ms": 1000,
        "heartbeat_interval_ms": 250,
        "group_id": f"pago-matcher-test-{uuid.uuid4().hex[:8]}",
        **over,
    }
    return MatcherSettings.model_validate(values)


async def publish(producer: AIOKafkaProducer, *transfers: TransferObserved) -> None:
    """Send transfers as a watcher does (keyed by address: one partition, in order)."""
    acks = [
        await producer.send(
            CHAIN_TRANSFERS,
            t.to_bytes(),
            key=transfer_key(t.network.value, t.to_address).encode(),
        )
        for t in transfers
    ]
    await asyncio.gather(*acks)


TRANSFER_PARTITIONS = next(t.partitions for t in TOPICS if t.name == CHAIN_TRANSFERS)


async def scan(
    producer: AIOKafkaProducer,
    block_time: datetime,
    *,
    network: Network = Network.ETHEREUM,
    mode: Mode = Mode.TEST,
    block_number: int = 1_000,
    partitions: Iterable[int] | None = None,
) -> None:
    """Write ``ChainScanned`` markers as a watcher does after the broker acked every transfer up
    to ``block_number``: one per partition of chain.transfers (all of them unless
    ``partitions`` names some), explicit partition, key ``{network}:{mode}``, headers ``v`` and
    ``event_type``."""
    acks = []
    for partition in range(TRANSFER_PARTITIONS) if partitions is None else partitions:
        marker = ChainScanned(
            network=network,
            mode=mode,
            block_number=block_number,
            block_hash="0x" + f"{block_number:064x}",
            block_time=block_time,
            partition=partition,
            partitions=TRANSFER_PARTITIONS,
            scanned_at=datetime.now(UTC),
        )
        acks.append(
            await producer.send(
                CHAIN_TRANSFERS,
                marker.to_bytes(),
                key=cursor_key(network.value, mode.value).encode(),
                partition=partition,
                headers=[("v", b"1"), ("event_type", b"ChainScanned")],
            )
        )
    await asyncio.gather(*acks)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``until`` holds on its value; fail with the last value otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if until(value):
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.03)
