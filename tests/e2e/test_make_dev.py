"""`pago-dev up` (what `make dev` runs) brings the system up; its printed key answers; the card
walk-through it prints works as printed (a token from the demo card client, a card session at a
local provider); Ctrl-C stops everything and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


SEED_SHAPE = {"sessionId", "checkoutUrl", "status", "routing", "expiresAt", "createdAt"}


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    """The output up to and including the first line matching ``pattern``."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    pytest.fail(f"pago-dev up never printed {pattern!r}; output:\n{''.join(seen)[-4000:]}")


def _dev_env(env: dict[str, str]) -> dict[str, str]:
    """What `pago-dev env` exports, parsed as a shell would."""
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "pago-dev"), "env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    exports: dict[str, str] = {}
    for line in printed.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        [exports[name]] = shlex.split(value)
    return exports


def _shell(command: str, env: dict[str, str]) -> dict[str, Any]:
    """Run a command the banner printed, as a developer pasting it would; its JSON answer."""
    result = subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def _check_card_walkthrough(banner: str, port: int, env: dict[str, str]) -> None:
    host = f"localhost:{port}"
    client_id = re.search(r"Card client\s+(cli_[0-9a-f]{24})", banner)
    assert client_id is not None, banner
    token_curl = (
        'curl -s -u "$PAGO_DEV_CARD_CLIENT_ID:$PAGO_DEV_CARD_CLIENT_SECRET"'
        f" -d grant_type=client_credentials {host}/oauth/token"
    )
    assert token_curl in banner
    assert "Idempotency-Key" in banner
    assert "checkoutUrl" in banner
    assert "click Pay" in banner
    exported = _dev_env(env)
    assert exported["PAGO_DEV_CARD_CLIENT_ID"] == client_id.group(1)
    assert f"export PAGO_DEV_CARD_CLIENT_SECRET={exported['PAGO_DEV_CARD_CLIENT_SECRET']}" in banner
    # The api enables every local provider (it enables none by default).
    assert exported["PAGO_CARD_ENABLED_PROVIDERS"] == "adyen,paypal,stripe"
    shell_env = {**env, **exported}
    token = _shell(token_curl, shell_env)
    assert token["token_type"].lower() == "bearer"
    assert set(token["scope"].split()) == {"sessions:write", "sessions:read"}
    # The create command exactly as printed: from its `curl` to the body's closing quote.
    create = re.search(r"^  (curl -s \S+/api/v1/sessions .*?\n\s*\}')$", banner, re.S | re.M)
    assert create is not None, banner
    command = create.group(1)  # its line continuations are the shell's to join
    assert '"total": 140.76' in command, "the seed's body, its numbers as written"
    session = _shell(command, {**shell_env, "TOKEN": token["access_token"]})
    assert set(session) == SEED_SHAPE
    assert session["status"] == "PENDING"
    stack = json.loads((Path(env["PAGO_DEVSTACK_DIR"]) / "stack.json").read_text())
    providers = stack["card_providers"]["providers"]
    winner = session["routing"]["selectedProvider"]
    assert session["checkoutUrl"].startswith(providers[winner] + "/")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/sessions/{session['sessionId']}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
        shown = json.loads(response.read())
    assert (shown["status"], shown["amount"]["total"]) == ("PENDING", "140.76")


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
        banner = _read_until(proc, r"Ctrl-C stops everything", timeout=180)
        found = re.search(r"Test key\s+(sk_test_[0-9a-f]{48})", banner)
        assert found is not None, banner
        key = found.group(1)
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
        _check_card_walkthrough(banner, port, env)
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
