"""`pago-dev up` (what `make dev` runs) brings the system up; its printed key answers; Ctrl-C
stops everything and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from pago.devstack._support import free_tcp_port
from pago.devstack.seed import SOLANA_POOL_SIZE


def _create_solana(port: int, key: str) -> str:
    """Create a SOLANA session on the dev stack (waiting out a 429); its pay address."""
    body = json.dumps(
        {"pricing_amount": "1", "pricing_currency": "USDC", "currency": "USDC", "network": "SOLANA"}
    ).encode()
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/checkout/sessions",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
                return str(json.loads(response.read())["pay_address"])
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise AssertionError(f"{exc.code}: {exc.read()[:300]!r}") from None
            time.sleep(float(exc.headers.get("Retry-After", "1")))


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    pytest.fail(f"pago-dev up never printed {pattern!r}; output:\n{''.join(seen)[-4000:]}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dev_up_serves_the_printed_key_and_stops_clean(tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    env["PAGO_DEVSTACK_DIR"] = str(tmp_path / "devstack")
    cmd = [str(Path(sys.executable).parent / "pago-dev"), "up", "--api-port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    descendants: list[psutil.Process] = []
    try:
        key = _read_until(proc, r"Test key\s+(sk_test_[0-9a-f]{48})", timeout=180).group(1)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert descendants, "the services and servers run as child processes"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/checkout/sessions",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
            body = json.loads(response.read())
        assert response.status == 200
        assert set(body) == {"data", "meta"}
        stack = json.loads((tmp_path / "devstack" / "stack.json").read_text())
        assert stack["evm"]["tokens"].keys() == {"USDT", "USDC"}
        # The local card providers run, and the api was pointed at them.
        cards = stack["card_providers"]
        assert stack["env"]["PAGO_CARD_STRIPE_BASE_URL"] == cards["providers"]["stripe"]
        assert cards["webhook_base_url"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{cards['url']}/healthz", timeout=10) as health:  # noqa: S310
            assert "stripe" in json.loads(health.read())["providers"]
        # The local chains are what a checkout page may watch (detection_rpc_url).
        chains = tomllib.loads((tmp_path / "devstack" / "chains.toml").read_text())
        for network in ("ETHEREUM", "SOLANA"):
            local = chains["networks"][network]["test"]
            assert local["detection_rpc_url"] == local["rpc_urls"][0]
        # The demo merchant's Solana pool never runs dry: past its seeded size it refills itself
        # with generated keys. Every key, seeded or generated, is kept in the stack's directory
        # for sweeping (and only there).
        addresses = [_create_solana(port, key) for _ in range(SOLANA_POOL_SIZE + 1)]
        assert len(set(addresses)) == len(addresses)
        keys = (tmp_path / "devstack" / "pool-keys" / "mch_demo.solana.test.jsonl").read_text()
        assert set(addresses) <= {json.loads(line)["address"] for line in keys.splitlines()}
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[(p.pid, p.name()) for p in alive]}"
