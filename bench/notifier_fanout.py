"""Notifier fan-out: 10,000 session events from the outbox to a local webhook receiver.

Each event is written to the outbox (as the matcher writes ``session.updated`` → ``Paid``) for one
of 20 merchants, an outbox relay publishes them to ``checkout.sessions``, and the real notifier
composition root (consumer, fan-out, delivery worker, SSRF guard, signing) sends one signed
webhook per event to an HTTP/1.1 receiver on 127.0.0.1 that answers 200 at once.

Measured: deliveries per second from the first outbox row to the last receipt of a 10,000-event
burst (and its delays, which are mostly queueing), then the delay from outbox row to receipt
(p50, p99) at a steady 50 events/s.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import Servers
from pago.common.db.engine import create_engine
from pago.common.db.schema import merchants, webhook_endpoints
from pago.common.enums import ChainFamily, Mode, Network, SessionStatus, Token
from pago.common.events import PricingSnapshot, SessionSnapshot, SessionUpdated
from pago.common.kafka import create_producer
from pago.common.outbox import OutboxMessage, OutboxRelay, enqueue
from pago.common.topics import CHECKOUT_SESSIONS
from pago.notifier.app import create_app
from pago.notifier.settings import NotifierSettings

EVENTS = int(__import__("os").environ.get("BENCH_EVENTS", "10000"))
MERCHANTS = 20
"""Each with one endpoint on the receiver: the events spread as many merchants' would, and each
endpoint gets the production ``endpoint_concurrency``."""
PACED_EVENTS = 500
PACED_RATE = 50
TARGET = 200
"""Deliveries per second this machine class sustains (2 vCPUs shared with embedded Postgres,
Kafka and the receiver, all in one event loop with the notifier)."""


class _Receiver:
    """Answers every POST with 200 and notes when each event id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.done = asyncio.Event()
        self._expected = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def expect(self, count: int) -> None:
        """``done`` is set once ``count`` distinct events have arrived."""
        self._expected = count
        self.done.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                length = 0
                event_id = ""
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "webhook-id":
                        event_id = value.strip()
                await reader.readexactly(length)
                self.arrived.setdefault(event_id, time.time())
                if len(self.arrived) >= self._expected:
                    self.done.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _event(merchant_id: str, i: int, now: datetime) -> SessionUpdated:
    session_id = f"cs_bench{i:016x}"
    return SessionUpdated(
        event_id=f"evt_bench{i:016x}",
        session_id=session_id,
        merchant_id=merchant_id,
        mode=Mode.TEST,
        occurred_at=now,
        previous_status=SessionStatus.PENDING,
        session=SessionSnapshot(
            id=session_id,
            livemode=False,
            url=f"https://pay.example/checkout/{session_id}",
            status=SessionStatus.PAID,
            amount="10.5",
            amount_expected="10.5",
            amount_received="10.5",
            fee_amount="1",
            net_amount="9.5",
            currency=Token.USDT,
            currency_contract="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            network=Network.TRON,
            chain_family=ChainFamily.TRON,
            merchant_name="Bench Shop",
            merchant_logo_url=None,
            pay_address="TQFEyGNzHZAJmebJUvsoZvJghHm2yNhXAD",
            client_reference_id=f"order-{i}",
            pricing=PricingSnapshot(currency="USDT", amount="10.50", exchange_rate="1.00000000"),
            success_url=None,
            cancel_url=None,
            sub_merchant_code=None,
            transactions=(),
            expires_at=now + timedelta(minutes=30),
            created_at=now,
        ),
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(servers: Servers) -> dict[str, Any]:
    receiver = _Receiver()
    port = await receiver.start()
    engine = create_engine(servers.database_url, pool_size=4)
    merchant_ids = [f"mer_bench{secrets.token_hex(4)}" for _ in range(MERCHANTS)]
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE outbox, webhook_deliveries"))
        for merchant_id in merchant_ids:
            await conn.execute(insert(merchants).values(id=merchant_id, name="Bench Shop"))
            await conn.execute(
                insert(webhook_endpoints).values(
                    id=f"we_bench{secrets.token_hex(4)}",
                    merchant_id=merchant_id,
                    mode=Mode.TEST.value,
                    url=f"http://127.0.0.1:{port}/hooks/{merchant_id}",
                    enabled_events=["session.completed"],
                    secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
                    created_at=datetime.now(UTC) - timedelta(minutes=1),
                )
            )
    settings = NotifierSettings.model_validate(
        {
            "database_url": servers.database_url,
            "redis_url": servers.redis_url,
            "kafka_bootstrap_servers": servers.kafka_bootstrap_servers,
            "env": "test",
            "http_port": 0,
            "group_id": f"bench-notifier-{secrets.token_hex(4)}",
            "allow_loopback": True,
            "concurrency": 64,
            "poll_interval": 0.05,
            "batch_timeout_ms": 20,
            "fetch_wait_ms": 50,
            "log_level": "WARNING",
        }
    )
    notifier = create_app(settings)
    await notifier.start()
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-notifier-relay")
    await producer.start()
    relay = OutboxRelay(engine, producer)
    relay_task = asyncio.create_task(relay.run())
    try:
        burst = await _burst(engine, receiver, merchant_ids)
        paced = await _paced(engine, receiver, merchant_ids)
    finally:
        relay.stop()
        await relay_task
        await producer.stop()
        await notifier.stop()
        await receiver.stop()
        await engine.dispose()
    return {
        "events": EVENTS,
        "endpoints": MERCHANTS,
        "deliveries_per_s": round(burst["rate"]),
        "burst_delay_p50_ms": burst["p50_ms"],
        "burst_delay_p99_ms": burst["p99_ms"],
        "paced_events_per_s": PACED_RATE,
        "paced_delay_p50_ms": paced["p50_ms"],
        "paced_delay_p99_ms": paced["p99_ms"],
        "target_deliveries_per_s": TARGET,
        "meets_target": burst["rate"] >= TARGET,
    }


async def _enqueue(engine: AsyncEngine, events: list[SessionUpdated]) -> float:
    async with engine.begin() as conn:
        await enqueue(
            conn, [OutboxMessage.of(CHECKOUT_SESSIONS, e.session_id, e, e.type) for e in events]
        )
    return time.time()


def _delays(receiver: _Receiver, queued: dict[str, float]) -> dict[str, float]:
    delays = [receiver.arrived[event_id] - at for event_id, at in queued.items()]
    return {
        "p50_ms": round(_percentile(delays, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(delays, 0.99) * 1000, 1),
    }


async def _burst(
    engine: AsyncEngine, receiver: _Receiver, merchant_ids: list[str]
) -> dict[str, float]:
    """All events at once, as a backlog after an outage: the rate is the drain rate, and the
    delays mostly measure the queue."""
    queued: dict[str, float] = {}
    receiver.expect(EVENTS)
    started = time.time()
    now = datetime.now(UTC)
    for start in range(0, EVENTS, 500):
        events = [
            _event(merchant_ids[i % MERCHANTS], i, now)
            for i in range(start, min(EVENTS, start + 500))
        ]
        stamp = await _enqueue(engine, events)
        queued.update((e.event_id, stamp) for e in events)
    await asyncio.wait_for(receiver.done.wait(), timeout=600)
    elapsed = max(receiver.arrived[e] for e in queued) - started
    return {"rate": EVENTS / elapsed, **_delays(receiver, queued)}


async def _paced(
    engine: AsyncEngine, receiver: _Receiver, merchant_ids: list[str]
) -> dict[str, float]:
    """A steady ``PACED_RATE`` events/s, below capacity: the delay a merchant sees normally."""
    queued: dict[str, float] = {}
    receiver.expect(len(receiver.arrived) + PACED_EVENTS)
    for k in range(PACED_EVENTS):
        i = EVENTS + k
        event = _event(merchant_ids[i % MERCHANTS], i, datetime.now(UTC))
        queued[event.event_id] = await _enqueue(engine, [event])
        await asyncio.sleep(1 / PACED_RATE)
    await asyncio.wait_for(receiver.done.wait(), timeout=120)
    return _delays(receiver, queued)
