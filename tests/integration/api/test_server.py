"""``pago-api`` as deployed: a uvicorn process configured from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.main import main
from pago.api.settings import ApiSettings
from pago.devstack._support import free_tcp_port
from tests.support.api import crypto_body, seed_merchant
from tests.support.processes import ServiceProcess, api_process, module, run_to_exit


def _production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings a production ``pago-api`` cannot start without (addresses go nowhere)."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("PAGO_ENV", "production")
    monkeypatch.setenv("PAGO_API_KEY_PEPPER", "a-production-pepper")
    monkeypatch.setenv("PAGO_OAUTH_KEY_ENCRYPTION_SECRET", "a-production-oauth-key-secret-32chars")


async def test_serves_the_api_and_stops_cleanly_on_sigterm(
    server_env: dict[str, str], settings: ApiSettings, db: AsyncEngine
) -> None:
    merchant = await seed_merchant(db, settings)
    port = free_tcp_port()
    env = {
        **server_env,
        "PAGO_API_PORT": str(port),
        "PAGO_CHECKOUT_BASE_URL": "https://pay.example/c",
        "PAGO_LOG_LEVEL": "INFO",
    }
    with api_process(env) as api:
        url = f"http://127.0.0.1:{port}"
        await api.wait_healthy(url)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/readyz")).json()["status"] == "ready"
            response = await client.post(
                "/v1/checkout/sessions", json=crypto_body(), headers=merchant.headers()
            )
            assert response.status_code == 201, response.text
            session = response.json()
            assert session["url"] == f"https://pay.example/c/{session['id']}"
            missing = await client.get("/v1/nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "resource_missing"
            assert "server" not in missing.headers
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert await asyncio.to_thread(api.terminate, 20) in (0, -signal.SIGTERM)
    output = api.output()
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output, output
    assert "sk_test_" not in output, output
    first = output.splitlines()[0]
    assert first.startswith("{"), first
    assert '"service": "pago-api"' in first, first


def test_a_missing_setting_stops_it_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REDIS_URL", "PAGO_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["pago-api: missing required setting REDIS_URL"]


def test_production_refuses_the_static_rate_table_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _production_env(monkeypatch)
    monkeypatch.delenv("PAGO_RATE_PROVIDER", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "pago-api: PAGO_RATE_PROVIDER=static (a fixed development table) is refused in "
        "production; set PAGO_RATE_PROVIDER=http"
    ]
    monkeypatch.setenv("PAGO_RATE_PROVIDER", "http")
    assert ApiSettings().rate_provider == "http"  # the same environment with a live source


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "PAGO_WEBHOOK_MAX_ENDPOINTS",
            "0",
            "pago-api: invalid setting PAGO_WEBHOOK_MAX_ENDPOINTS: Input should be greater than or "
            "equal to 1",
        ),
        (
            "PAGO_WEBHOOK_ALLOWED_NETWORKS",
            "10.0.0.0/8, not-a-network",
            "pago-api: invalid setting PAGO_WEBHOOK_ALLOWED_NETWORKS: Input is not a valid IPv4 "
            "network; invalid setting PAGO_WEBHOOK_ALLOWED_NETWORKS: Input is not a valid IPv6 "
            "network",
        ),
    ],
)
def test_a_bad_webhook_setting_stops_the_process_at_start_with_one_line(
    name: str, value: str, line: str
) -> None:
    """The webhook URL policy is read with the api's settings, before anything is served: a
    bad value is this line and exit 2, not a 500 at the first webhook request."""
    env = {
        "DATABASE_URL": "postgresql://u@127.0.0.1/db",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "PAGO_API_PORT": str(free_tcp_port()),
        name: value,
    }
    done = run_to_exit(module("pago.api.main", "--host", "127.0.0.1"), env, timeout=30)
    assert done.returncode == 2
    assert (done.stdout + done.stderr).splitlines() == [line]


class _Server:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_tcp_port()
        self.metrics_port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: ServiceProcess = api_process(
            {
                **env,
                "PAGO_API_PORT": str(self.port),
                "PAGO_API_METRICS_PORT": str(self.metrics_port),
                "PAGO_PUBLIC_RATE_LIMIT_PER_SECOND": "0.5",
                "PAGO_PUBLIC_RATE_LIMIT_BURST": "2",
            },
            *args,
        )

    def stop(self) -> str:
        self.api.stop(timeout=20)
        return self.api.output()


@contextlib.asynccontextmanager
async def _serving(env: dict[str, str], redis: Redis, *args: str) -> AsyncIterator[_Server]:
    """A healthy ``_Server``; stopped after, with no slow bucket of 127.0.0.1 left for later
    tests, and no traceback in its output."""
    server = _Server(env, *args)
    try:
        await server.api.wait_healthy(server.url)
        yield server
    finally:
        output = server.stop()
        await redis.flushdb()  # no slow bucket of 127.0.0.1 left for later tests
    assert "Traceback" not in output, output


async def _statuses(client: httpx.AsyncClient, forwarded_for: str, count: int) -> list[int]:
    return [
        (await client.get("/openapi.json", headers={"X-Forwarded-For": forwarded_for})).status_code
        for _ in range(count)
    ]


class TestBehindAnIngress:
    async def test_trusted_proxy_clients_get_their_own_buckets_and_metrics_stay_private(
        self, server_env: dict[str, str], redis: Redis
    ) -> None:
        env = {**server_env, "PAGO_FORWARDED_ALLOW_IPS": "127.0.0.1"}
        async with (
            _serving(env, redis) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert await _statuses(client, "203.0.113.20", 3) == [200, 200, 429]
            assert await _statuses(client, "203.0.113.21", 1) == [200]
            public = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.22"})
            assert public.status_code == 404
            scraped = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
            assert scraped.status_code == 200
            assert 'pago_api_requests_total{method="GET",route="/healthz"' in scraped.text

    async def test_an_untrusted_peer_cannot_choose_its_client_ip(
        self, server_env: dict[str, str], redis: Redis
    ) -> None:
        env = {**server_env, "PAGO_FORWARDED_ALLOW_IPS": "10.9.9.9"}
        async with _serving(env, redis, "--workers", "2") as server:
            await redis.flushdb()  # the probes above spent 127.0.0.1's bucket
            async with httpx.AsyncClient(base_url=server.url) as client:
                first = await _statuses(client, "203.0.113.30", 1)
                # The header is ignored: every "client" is 127.0.0.1, one bucket.
                rest = await _statuses(client, "203.0.113.31", 2)
                assert first + rest == [200, 200, 429]
                # Two workers: the server process sums what both wrote.
                scraped = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
                assert scraped.status_code == 200
                assert 'route="/healthz"' in scraped.text


def test_loopback_webhooks_cannot_be_enabled_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at start, not at the first webhook request."""
    _production_env(monkeypatch)
    monkeypatch.setenv("PAGO_RATE_PROVIDER", "http")
    monkeypatch.setenv("PAGO_WEBHOOK_ALLOW_LOOPBACK", "true")
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "pago-api: PAGO_WEBHOOK_ALLOW_LOOPBACK must not be true in production"
    ]
