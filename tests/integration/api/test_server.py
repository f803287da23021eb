"""``pago-api`` as deployed: a uvicorn process configured from the environment."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.main import main
from pago.api.settings import ApiSettings
from pago.devstack._support import free_tcp_port
from tests.component.api.support import crypto_body, seed_merchant


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"pago-api exited with {proc.returncode}")
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("pago-api did not become healthy")


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "pago.api.main", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_healthy(url, proc)
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
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert await asyncio.to_thread(proc.wait, 20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""
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
