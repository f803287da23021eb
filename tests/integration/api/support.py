"""``pago-api`` as deployed, for the tests that run it: a uvicorn process from the environment."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx


def spawn_api(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m pago.api.main`` on 127.0.0.1 with exactly ``env`` (plus ``args``);
    its stdout and stderr are piped together."""
    return subprocess.Popen(
        [sys.executable, "-m", "pago.api.main", "--host", "127.0.0.1", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until ``url``'s ``/healthz`` answers 200; fail if ``proc`` exits first."""
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
