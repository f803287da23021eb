"""Session create through uvicorn, beside a floor of the same I/O from a tight loop.

The api runs as deployed: ``python -m pago.api.main`` (one uvicorn worker, uvloop, httptools)
with its outbox relay in-process. 32 keep-alive clients POST ``/v1/checkout/sessions`` in a
closed loop (peak throughput, p50/p99); then an open loop offers half that rate and measures
latency from each request's *scheduled* time, so queueing is not hidden. The worker's RSS is
read at the end.

The floor does per session what the api does against the servers, and nothing else: the rate
limit script in Redis, the API key lookup, one transaction with the xpub index, the address
lease, the session row and two outbox rows, and the two produce calls the relay makes (each
awaited), from 32 coroutines in this process. The ratio api / floor is the cost of HTTP,
validation, pricing, derivation and serialization (target ≥ 0.40).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import psutil
from bip_utils import Bip44, Bip44Coins

from bench.harness import Servers
from pago.api.addresses import repository as addresses
from pago.api.admin import service as admin
from pago.api.auth import repository as auth
from pago.api.auth.keys import hash_key
from pago.api.ratelimit import Limit, RateLimiter
from pago.api.sessions import repository as sessions
from pago.common.db.engine import create_engine
from pago.common.enums import ChainFamily, Mode, Network, SessionStatus
from pago.common.kafka import create_producer
from pago.common.outbox import OutboxMessage, enqueue
from pago.common.redis import create_redis
from pago.common.topics import CHAIN_WATCHLIST, CHECKOUT_SESSIONS

CLIENTS = 32
WARMUP_S = 3.0
PEAK_S = 12.0
HALF_S = 10.0
PEPPER = "bench-pepper"
BODY = {
    "pricing_amount": "25.00",
    "pricing_currency": "USDT",
    "currency": "USDT",
    "network": "ETHEREUM",
    "client_reference_id": "bench",
}
PAYLOAD = b'{"type":"session.created","v":1,"pad":"' + b"x" * 1100 + b'"}'
"""About the size of a session.created event."""
TARGET_RATIO = 0.40
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 250.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def _seed(servers: Servers) -> tuple[str, str]:
    """A merchant with a test key and a fresh EVM xpub; returns (merchant id, key)."""
    engine = create_engine(servers.database_url, pool_size=1)
    xpub = (
        Bip44.FromSeed(secrets.token_bytes(32), Bip44Coins.ETHEREUM)
        .Purpose()
        .Coin()
        .Account(0)
        .PublicKey()
        .ToExtended()
    )
    try:
        async with engine.begin() as conn:
            merchant_id = await admin.create_merchant(conn, name="Bench Shop")
            key = await admin.create_api_key(
                conn, merchant_id, mode=Mode.TEST, pepper=PEPPER.encode()
            )
            await admin.register_xpub(
                conn, merchant_id, family=ChainFamily.EVM, mode=Mode.TEST, xpub=xpub
            )
        return merchant_id, key.key
    finally:
        await engine.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start_api(servers: Servers, port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        # Production refuses the static rate table and a bench has no live rate source;
        # nothing on the request path depends on the environment (the pepper is set anyway).
        "PAGO_ENV": "test",
        "PAGO_API_KEY_PEPPER": PEPPER,
        "PAGO_API_METRICS_PORT": "0",
        "PAGO_LOG_LEVEL": "WARNING",
        "PAGO_DB_POOL_SIZE": "16",
        # The limiter still runs (its Redis call is part of the work), it just never says no.
        "PAGO_RATE_LIMIT_PER_SECOND": "1000000",
        "PAGO_RATE_LIMIT_BURST": "1000000",
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pago.api.main", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    return await wait_ready(proc, port)


async def wait_ready(proc: asyncio.subprocess.Process, port: int) -> asyncio.subprocess.Process:
    """``proc`` once its ``/readyz`` answers 200 (killed, and an error, if it never does)."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"pago-api exited with {proc.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("pago-api did not become ready")


Request = Callable[[], Awaitable[bool]]


async def _closed_loop(request: Request, seconds: float) -> tuple[int, int, float, list[float]]:
    """``CLIENTS`` workers back to back for ``seconds``: (ok, failed, elapsed, latencies)."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = await request()
            latencies.append(time.perf_counter() - started)
            failures += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    return len(latencies) - failures, failures, elapsed, latencies


async def _open_loop(request: Request, rate: float, seconds: float) -> tuple[int, list[float]]:
    """Requests at a fixed ``rate``; latency from the scheduled start (no coordinated omission)."""
    latencies: list[float] = []
    failures = 0
    interval = 1 / rate
    count = int(rate * seconds)
    begin = time.perf_counter()

    async def one(scheduled: float) -> None:
        nonlocal failures
        ok = await request()
        latencies.append(time.perf_counter() - scheduled)
        failures += not ok

    tasks = []
    for i in range(count):
        scheduled = begin + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return failures, latencies


async def _api(servers: Servers, key: str) -> dict[str, Any]:
    port = _free_port()
    proc = await _start_api(servers, port)
    url = f"http://127.0.0.1:{port}/v1/checkout/sessions"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        connector = aiohttp.TCPConnector(limit=CLIENTS, limit_per_host=CLIENTS)
        async with aiohttp.ClientSession(connector=connector) as http:
            orders = itertools.count()

            async def create() -> bool:
                # A fresh reference each time: the duplicate-order guard (on by default) would
                # answer a repeated one with its session instead of creating one.
                body = {**BODY, "client_reference_id": f"bench-{next(orders)}"}
                async with http.post(url, json=body, headers=headers) as response:
                    await response.read()
                    return response.status == 201

            await _closed_loop(create, WARMUP_S)
            ok, failed, elapsed, latencies = await _closed_loop(create, PEAK_S)
            peak = ok / elapsed
            half_failed, half_latencies = await _open_loop(create, peak / 2, HALF_S)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return {
        "api_sessions_per_s": round(peak),
        "api_p50_ms": round(_percentile(latencies, 0.50), 2),
        "api_p99_ms": round(_percentile(latencies, 0.99), 2),
        "api_errors": failed + half_failed,
        "half_peak_rate_per_s": round(peak / 2),
        "half_peak_p50_ms": round(_percentile(half_latencies, 0.50), 2),
        "half_peak_p99_ms": round(_percentile(half_latencies, 0.99), 2),
        "api_worker_rss_mb": round(rss, 1),
    }


async def _floor(servers: Servers, merchant_id: str, key: str) -> dict[str, Any]:
    engine = create_engine(servers.database_url, pool_size=16)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    redis = create_redis(servers.redis_url)
    limiter = RateLimiter(redis)
    limit = Limit(1_000_000, 1_000_000)
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-floor")
    await producer.start()
    digest = hash_key(PEPPER.encode(), key)

    async def create() -> bool:
        await limiter.hit("bench-floor", limit)
        async with autocommit.connect() as conn:
            await auth.find_key(conn, digest, None)
        now = datetime.now(UTC)
        session_id = f"cs_{secrets.token_hex(12)}"
        address = "0x" + secrets.token_hex(20)
        async with engine.begin() as conn:
            index = await addresses.next_xpub_index(conn, merchant_id, "evm", "test")
            assert index is not None
            await addresses.insert_derived(
                conn,
                merchant_id=merchant_id,
                family="evm",
                mode="test",
                address=address,
                xpub_id=index.xpub_id,
                index=index.index,
                session_id=session_id,
                leased_until=now + timedelta(days=1),
            )
            await sessions.insert_session(conn, _record(session_id, merchant_id, address, now))
            await enqueue(
                conn,
                [
                    OutboxMessage(CHECKOUT_SESSIONS, session_id, PAYLOAD),
                    OutboxMessage(CHAIN_WATCHLIST, f"ETHEREUM:test:{address}", PAYLOAD[:200]),
                ],
            )
        acks = [
            await producer.send(CHECKOUT_SESSIONS, PAYLOAD, key=session_id.encode()),
            await producer.send(CHAIN_WATCHLIST, PAYLOAD[:200], key=address.encode()),
        ]
        await asyncio.gather(*acks)
        return True

    try:
        await _closed_loop(create, WARMUP_S)
        ok, _, elapsed, latencies = await _closed_loop(create, PEAK_S)
    finally:
        await producer.stop()
        await redis.aclose()
        await engine.dispose()
    return {
        "floor_sessions_per_s": round(ok / elapsed),
        "floor_p50_ms": round(_percentile(latencies, 0.50), 2),
        "floor_p99_ms": round(_percentile(latencies, 0.99), 2),
    }


def _record(
    session_id: str, merchant_id: str, address: str, now: datetime
) -> sessions.SessionRecord:
    return sessions.SessionRecord(
        id=session_id,
        merchant_id=merchant_id,
        sub_merchant_id=None,
        sub_merchant_code=None,
        merchant_name="Bench Shop",
        merchant_logo_url=None,
        mode="test",
        status=SessionStatus.PENDING,
        network=Network.ETHEREUM,
        currency="USDT",
        currency_contract="0x7169D38820dfd117C3FA1f22a697dBA58d90BA06",
        decimals=6,
        amount_expected=25_000_000,
        amount_received=0,
        fee_amount=0,
        net_amount=0,
        pay_address=address,
        client_reference_id="bench",
        pricing_currency="USDT",
        pricing_amount="25.00",
        exchange_rate=Decimal(1),
        success_url=None,
        cancel_url=None,
        expires_at=now + timedelta(minutes=30),
        created_at=now,
    )


async def run(servers: Servers) -> dict[str, Any]:
    merchant_id, key = await _seed(servers)
    floor = await _floor(servers, merchant_id, key)
    api = await _api(servers, key)
    ratio = api["api_sessions_per_s"] / floor["floor_sessions_per_s"]
    return {
        "clients": CLIENTS,
        **api,
        **floor,
        "api_vs_floor": round(ratio, 3),
        "target_api_vs_floor": TARGET_RATIO,
        "target_half_peak_p99_ms": TARGET_P99_MS,
        "target_rss_mb": TARGET_RSS_MB,
        "cpus": os.cpu_count(),
    }
