"""Card session create (``POST /api/v1/sessions``) through uvicorn, beside two figures of the
same run: a floor of the same writes from a tight loop, and the local providers' own creates.

The api runs as deployed: ``python -m pago.api.main`` (one uvicorn worker) with its outbox
relay in-process and every provider enabled against the local card-provider server, which runs
in a process of its own (as a real provider is not in the api's process, and so it takes no
CPU from the bench's clients in this one). 32 keep-alive clients, each an OAuth client with
its own token (fetched from ``POST /oauth/token`` before timing), POST the seed order in a
closed loop, each request with a fresh ``Idempotency-Key``: throughput, p50/p99, and which
provider routing chose.

The floor does per session the writes the create path does, and nothing else, from 32
coroutines in this process with the api's own repository functions: the per-client rate limit
script and the idempotency lock in Redis, the durable record's lookup and claim, the session
row and the routing decision (one transaction), the attempt (its own), the attempt's result
(its own), then in the claimed transaction the live attempt, the route statistics, the
``card_session.created`` outbox row and the completed record; the lock's completion in Redis;
and the produce the relay makes for the event (awaited). Left out: routing (statistics read,
the breaker's health/acquire/record scripts, the scorer), the JWT check, the provider call,
HTTP and (de)serialization. api / floor is what those cost together. The floor runs once more
without the route-statistics upsert: every create of one route and hour updates one row and
holds its lock until the request commits, which serializes the creates of a route.

The providers' own figure is each provider's create through its adapter (the api's own httpx
client and request body) from 32 coroutines in this process, without Pago in between: if the
api's rate approaches it, the fake (or the adapter's client) is the bottleneck, not Pago.

``PAGO_BENCH_PROFILE=1`` runs the api under cProfile (its whole life; the figures of such a run
are the profiler's) and adds its top functions by own time to the result.
``PAGO_BENCH_CARD_POOL_SIZE`` (default 24) sizes the api's and the floor's Postgres pools;
``PAGO_BENCH_CARD_API_ONLY=1`` measures the api alone (``=16`` and ``=1`` show the pool stall).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import pstats
import secrets
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from sqlalchemy import delete

from bench.harness import Servers
from bench.session_create import wait_ready
from pago.api.admin import service as admin
from pago.api.cards import repository as cards
from pago.api.cards import stats_repository
from pago.api.cards.parsing import parse_request
from pago.api.cards.providers.base import CardOrder
from pago.api.cards.routing.model import RoutingRules
from pago.api.cards.routing.scorer import score
from pago.api.cards.service import (
    _candidate_json,
    _session_message,
    _session_values,
    provider_key,
)
from pago.api.cards.settings import CardSettings
from pago.api.cards.wiring import build_adapter
from pago.api.idempotency.durable import DurableStore
from pago.api.idempotency.middleware import (
    Acquired,
    IdempotencyStore,
    StoredResponse,
    durable_scope,
    record_key,
)
from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE, ClientPrincipal
from pago.api.ratelimit import Limit, RateLimiter
from pago.common.db.engine import create_engine
from pago.common.db.schema import card_route_stats
from pago.common.enums import CardProvider, Mode
from pago.common.kafka import create_producer
from pago.common.outbox import enqueue
from pago.common.redis import create_redis
from pago.common.topics import CARD_SESSIONS
from tests.support.cardproviders import seed_order

CLIENTS = 32
WARMUP_S = 3.0
PEAK_S = 12.0
PROVIDER_WARMUP_S = 1.0
PROVIDER_S = 5.0
PEPPER = "bench-pepper"
ROOT = Path(__file__).resolve().parents[1]
SEED_RAW = (ROOT / "tests" / "support" / "cards" / "seed_request.json").read_bytes()
PATH = "/api/v1/sessions"
PROFILE_TOP = 15
POOL_SIZE = int(os.environ.get("PAGO_BENCH_CARD_POOL_SIZE", "24"))
"""Per process (and as much overflow again). A create holds its request transaction across the
provider call and takes a second connection for each of its own short transactions: with
``2 × POOL_SIZE`` ≤ the concurrent creates every connection can end up held by a request
waiting for a second one (the pool's 30 s timeout, then a 500), so it is above ``CLIENTS``."""
IDEMPOTENCY_TTL = 24 * 3600
LOCK_SECONDS = 30.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Request = Callable[[], Awaitable[bool]]


async def _closed_loop(
    requests: Sequence[Request], seconds: float
) -> tuple[int, int, float, list[float]]:
    """One worker per request function, back to back for ``seconds``: (ok, failed, elapsed,
    latencies)."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds

    async def worker(request: Request) -> None:
        nonlocal failures
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = await request()
            latencies.append(time.perf_counter() - started)
            failures += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(r) for r in requests))
    elapsed = time.perf_counter() - started
    return len(latencies) - failures, failures, elapsed, latencies


def _figures(prefix: str, ok: int, elapsed: float, latencies: list[float]) -> dict[str, Any]:
    return {
        f"{prefix}_creates_per_s": round(ok / elapsed),
        f"{prefix}_p50_ms": round(_percentile(latencies, 0.50), 2),
        f"{prefix}_p99_ms": round(_percentile(latencies, 0.99), 2),
    }


# --- the local providers, in a process of their own ----------------------------------------


def _serve_providers() -> None:
    """``python -m bench.card_sessions providers``: print the api's settings for them (one JSON
    line), serve until stdin closes."""
    from pago.devstack.cardproviders.server import CardProviderServer

    with CardProviderServer() as server:
        print(json.dumps(server.env_vars()), flush=True)
        sys.stdin.read()


@dataclasses.dataclass
class _Providers:
    proc: asyncio.subprocess.Process
    env: dict[str, str]

    @classmethod
    async def start(cls) -> _Providers:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.card_sessions", "providers"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the card-provider server exited with {await proc.wait()}")
        return cls(proc, json.loads(line))

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def settings(self) -> CardSettings:
        values: dict[str, Any] = {
            key.removeprefix("PAGO_CARD_").lower(): value for key, value in self.env.items()
        }
        values["enabled_providers"] = list(CardProvider)
        return CardSettings.model_validate(values)


# --- seeding -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Client:
    client_id: str
    secret: str


async def _seed(servers: Servers) -> tuple[str, list[_Client]]:
    """A merchant with one OAuth client per bench client (test mode)."""
    engine = create_engine(servers.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            merchant_id = await admin.create_merchant(conn, name="Bench Card Shop")
            made = []
            for _ in range(CLIENTS):
                client = await admin.create_oauth_client(
                    conn, merchant_id, mode=Mode.TEST, pepper=PEPPER.encode()
                )
                assert client.client_secret is not None
                made.append(_Client(client.client_id, client.client_secret))
        return merchant_id, made
    finally:
        await engine.dispose()


# --- the api -------------------------------------------------------------------------------


async def _start_api(
    servers: Servers, port: int, providers: _Providers, profile_to: Path | None
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **providers.env,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "PAGO_ENV": "test",
        "PAGO_API_KEY_PEPPER": PEPPER,
        "PAGO_API_METRICS_PORT": "0",
        "PAGO_LOG_LEVEL": "WARNING",
        "PAGO_DB_POOL_SIZE": str(POOL_SIZE),
        # The limiters still run (their Redis calls are part of the work), they never say no.
        "PAGO_RATE_LIMIT_PER_SECOND": "1000000",
        "PAGO_RATE_LIMIT_BURST": "1000000",
        "PAGO_IP_RATE_LIMIT_PER_SECOND": "1000000",
        "PAGO_IP_RATE_LIMIT_BURST": "1000000",
        # /api/v1/… is not under /v1/, so the per-IP limit of keyless routes (10/s by
        # default) applies to the card API too: 32 clients on one IP would mostly see 429.
        "PAGO_PUBLIC_RATE_LIMIT_PER_SECOND": "1000000",
        "PAGO_PUBLIC_RATE_LIMIT_BURST": "1000000",
        "PAGO_CARD_ENABLED_PROVIDERS": ",".join(p.value for p in CardProvider),
    }
    command: list[str] = [sys.executable]
    if profile_to is not None:
        command += ["-m", "cProfile", "-o", str(profile_to)]
    command += ["-m", "pago.api.main", "--host", "127.0.0.1", "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    return await wait_ready(proc, port)


async def _token(http: aiohttp.ClientSession, base: str, client: _Client) -> str:
    basic = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    async with http.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    ) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"/oauth/token answered {response.status}: {body}")
        token: str = body["access_token"]
        return token


def _top_functions(path: Path) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    rows: list[dict[str, Any]] = []
    entries: Mapping[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, own, cumulative, _) in entries.items():
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:PROFILE_TOP]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def _api(servers: Servers, clients: list[_Client], providers: _Providers) -> dict[str, Any]:
    port = _free_port()
    profile = os.environ.get("PAGO_BENCH_PROFILE") == "1"
    tmp = Path(tempfile.mkdtemp(prefix="pago-bench-profile-"))
    profile_to = tmp / "api.prof" if profile else None
    proc = await _start_api(servers, port, providers, profile_to)
    base = f"http://127.0.0.1:{port}"
    chosen: Counter[str] = Counter()
    errors: Counter[int] = Counter()
    try:
        connector = aiohttp.TCPConnector(limit=CLIENTS, limit_per_host=CLIENTS)
        async with aiohttp.ClientSession(connector=connector) as http:
            tokens = [await _token(http, base, c) for c in clients]

            def create_as(token: str) -> Request:
                async def create() -> bool:
                    headers = {
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": str(uuid.uuid4()),
                    }
                    async with http.post(base + PATH, data=SEED_RAW, headers=headers) as response:
                        body = await response.read()
                        if response.status != 201:
                            errors[response.status] += 1
                            return False
                    chosen[json.loads(body)["routing"]["selectedProvider"]] += 1
                    return True

                return create

            requests = [create_as(t) for t in tokens]
            await _closed_loop(requests, WARMUP_S)
            chosen.clear()
            ok, failed, elapsed, latencies = await _closed_loop(requests, PEAK_S)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    result: dict[str, Any] = {
        **_figures("api", ok, elapsed, latencies),
        "api_errors": failed,
        "api_error_statuses": {str(k): v for k, v in errors.items()},
        "api_selected_providers": dict(sorted(chosen.items())),
        "api_worker_rss_mb": round(rss, 1),
    }
    if profile_to is not None and profile_to.exists():
        result["api_profile_note"] = (
            "cProfile over the api's whole life (start, token fetch, warm-up and the timed "
            "window); the api's figures in this run are slowed by the profiler"
        )
        result["api_profile_top_own_time"] = _top_functions(profile_to)
    return result


# --- the floor -----------------------------------------------------------------------------


def _decision_json(
    order: CardOrder, providers: _Providers
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """A routing decision as the api stores it (scored once, outside the timing) and its top
    candidate."""
    settings = providers.settings()
    caps = {p: settings.capabilities_for(p, _capabilities(settings, p)) for p in CardProvider}
    decision = score(
        order,
        caps,
        stats={},
        health={},
        fees=settings.fee_schedules(),
        rules=RoutingRules(),
        weights=settings.weights,
        session_id=order.session_id,
    )
    ranked = [_candidate_json(c) for c in decision.ranked]
    return ranked, [_candidate_json(c) for c in decision.rejected], decision.ranked[0]


def _capabilities(settings: CardSettings, provider: CardProvider) -> Any:
    adapter = build_adapter(settings, provider)
    return adapter.capabilities  # its client is never used (closed with the process)


async def _floor(
    servers: Servers, merchant_id: str, providers: _Providers, *, route_stats: bool = True
) -> dict[str, Any]:
    """``route_stats=False``: without the statistics upsert, whose row (one per route and hour)
    every create of the route locks until its transaction commits."""
    engine = create_engine(servers.database_url, pool_size=POOL_SIZE)
    redis = create_redis(servers.redis_url)
    limiter = RateLimiter(redis)
    limit = Limit(1_000_000, 1_000_000)
    store = IdempotencyStore(redis, ttl_seconds=IDEMPOTENCY_TTL, lock_seconds=LOCK_SECONDS)
    durable = DurableStore(engine, ttl_seconds=IDEMPOTENCY_TTL)
    producer = create_producer(servers.kafka_bootstrap_servers, client_id="bench-card-floor")
    await producer.start()
    body = parse_request(SEED_RAW)
    ranked, rejected, top = _decision_json(seed_order(expires_at=datetime.now(UTC)), providers)
    response = b'{"sessionId":"' + b"0" * 36 + b'","checkoutUrl":"' + b"x" * 120 + b'"}'

    def as_client(n: int) -> Request:
        principal = ClientPrincipal(
            client_id=f"bench-floor-{n}",
            merchant_id=merchant_id,
            mode=Mode.TEST,
            scopes=frozenset({SCOPE_SESSIONS_WRITE, SCOPE_SESSIONS_READ}),
            issuer="bench",
        )

        async def create() -> bool:
            await limiter.hit(f"client:{principal.client_id}", limit)
            key = str(uuid.uuid4())
            rkey = record_key(principal, key)
            fp = secrets.token_hex(32)
            began = await store.begin(rkey, fp)
            assert isinstance(began, Acquired)
            claim = durable.claim(durable_scope(principal, key), fp)
            assert await durable.find(claim.scope) is None
            now = datetime.now(UTC).replace(microsecond=0)
            session_id = str(uuid.uuid4())
            order = seed_order(session_id=session_id, expires_at=now + timedelta(hours=1))
            async with engine.begin() as conn:
                await claim.take(conn)
                async with engine.begin() as trace:
                    await cards.insert_session(trace, _session_values(principal, order, body, now))
                    await cards.insert_decision(trace, session_id, ranked, rejected, None, now)
                key1 = provider_key(session_id, 1)
                async with engine.begin() as trace:
                    await cards.insert_attempt(trace, session_id, 1, top.provider, key1, now)
                reference = f"cs_test_{secrets.token_hex(12)}"
                url = f"http://127.0.0.1/stripe/pay/{reference}"
                async with engine.begin() as trace:
                    await cards.finish_attempt(
                        trace,
                        session_id,
                        1,
                        status="created",
                        now=now,
                        reference=reference,
                        checkout_url=url,
                        latency_ms=1,
                    )
                row = await cards.make_live(
                    conn,
                    session_id,
                    seq=1,
                    provider=top.provider,
                    reference=reference,
                    checkout_url=url,
                    score=top.score,
                    now=now,
                )
                if route_stats:
                    await stats_repository.record_attempt(conn, top.provider, "AUD", "AU")
                message = _session_message(row, "card_session.created", None, now)
                await enqueue(conn, [message])
                await claim.complete(conn, 201, "application/json", response)
            stored = StoredResponse(201, "application/json", response)
            assert await store.complete(rkey, began.token, stored)
            ack = await producer.send(CARD_SESSIONS, message.value, key=session_id.encode())
            await ack
            return True

        return create

    requests = [as_client(n) for n in range(CLIENTS)]
    try:
        await _closed_loop(requests, WARMUP_S)
        ok, _, elapsed, latencies = await _closed_loop(requests, PEAK_S)
    finally:
        await producer.stop()
        await redis.aclose()
        await engine.dispose()
    return _figures("floor" if route_stats else "floor_without_route_stats", ok, elapsed, latencies)


async def _forget_route_stats(servers: Servers) -> None:
    """The floor's statistics would steer the api's routing: start it from none, as a fresh
    deployment does."""
    engine = create_engine(servers.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(card_route_stats))
    finally:
        await engine.dispose()


# --- the providers alone -------------------------------------------------------------------


async def _provider_alone(providers: _Providers) -> dict[str, Any]:
    settings = providers.settings()
    result: dict[str, Any] = {}
    for provider in CardProvider:
        adapter = build_adapter(settings, provider)
        try:

            async def create() -> bool:
                order = seed_order()
                key = provider_key(order.session_id, 1)
                await adapter.create_checkout(order, idempotency_key=key)  # noqa: B023
                return True

            requests = [create] * CLIENTS
            await _closed_loop(requests, PROVIDER_WARMUP_S)
            ok, _, elapsed, latencies = await _closed_loop(requests, PROVIDER_S)
        finally:
            await adapter.aclose()
        result[provider.value] = _figures("provider", ok, elapsed, latencies)
    return result


async def run(servers: Servers) -> dict[str, Any]:
    load_before = os.getloadavg()
    merchant_id, clients = await _seed(servers)
    providers = await _Providers.start()
    try:
        if os.environ.get("PAGO_BENCH_CARD_API_ONLY") == "1":  # an experiment's shortcut
            return await _api(servers, clients, providers)
        floor = await _floor(servers, merchant_id, providers)
        floor_without = await _floor(servers, merchant_id, providers, route_stats=False)
        await _forget_route_stats(servers)
        api = await _api(servers, clients, providers)
        alone = await _provider_alone(providers)
    finally:
        await providers.stop()
    chosen: Mapping[str, int] = api["api_selected_providers"]
    busiest = max(chosen, key=lambda p: chosen[p]) if chosen else None
    rate = api["api_creates_per_s"]
    return {
        "clients": CLIENTS,
        **api,
        **floor,
        **floor_without,
        "providers_alone": alone,
        "api_vs_floor": round(rate / floor["floor_creates_per_s"], 3),
        "floor_without_route_stats_vs_floor": round(
            floor_without["floor_without_route_stats_creates_per_s"] / floor["floor_creates_per_s"],
            3,
        ),
        "api_vs_busiest_provider_alone": (
            round(rate / alone[busiest]["provider_creates_per_s"], 3) if busiest else None
        ),
        "floor_steps": [
            "rate limit script (Redis)",
            "idempotency lock (Redis)",
            "durable record lookup (Postgres)",
            "durable claim (request transaction)",
            "session row + routing decision (own transaction)",
            "attempt (own transaction)",
            "attempt result (own transaction)",
            "make live, route stats upsert, outbox row, record complete; commit",
            "idempotency lock complete (Redis)",
            "produce of the outbox event (awaited ack)",
        ],
        "floor_leaves_out": [
            "HTTP and JSON (de)serialization, request validation",
            "JWT verification",
            "routing: statistics read, breaker health/acquire/record (3 Redis scripts), scorer",
            "the provider create call",
        ],
        "db_pool_size": POOL_SIZE,
        "cpus": os.cpu_count(),
        "load_average_1m_before": round(load_before[0], 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["providers"]:
        _serve_providers()
    else:
        raise SystemExit("usage: python -m bench.card_sessions providers")
