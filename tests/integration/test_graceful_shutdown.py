"""Every service stops taking work on SIGTERM, finishes what is in flight and exits 0 in time.

Kubernetes sends SIGTERM and waits ``terminationGracePeriodSeconds`` (30 s for the api, 60 s
for the others in deploy/) before SIGKILL; a service must be gone well inside that.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil

GRACE_SECONDS = 20


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    node = Anvil.start(tmp_path_factory.mktemp("anvil"))
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def chains_file(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chains") / "chains.toml"
    lines = [
        "[networks.ETHEREUM.test]",
        f"chain_id = {anvil.chain_id}",
        "confirmations = 1",
        f"rpc_urls = [{anvil.rpc_url!r}]",
    ]
    for symbol, address in anvil.tokens.items():
        lines += [
            f"[networks.ETHEREUM.test.tokens.{symbol}]",
            f'contract = "{address}"',
            "decimals = 6",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _command(service: str, port: int) -> tuple[list[str], dict[str, str]]:
    bin_dir = Path(sys.executable).parent
    if service == "api":
        return [str(bin_dir / "pago-api"), "--host", "127.0.0.1", "--port", str(port)], {}
    if service == "watcher":
        argv = [str(bin_dir / "pago-watcher"), "--network", "ETHEREUM", "--mode", "test"]
        return argv, {"PAGO_WATCHER_HTTP_PORT": str(port)}
    return [str(bin_dir / f"pago-{service}")], {f"PAGO_{service.upper()}_HTTP_PORT": str(port)}


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{proc.args!r} was not healthy within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("service", ["api", "matcher", "notifier", "watcher"])
def test_sigterm_exits_zero_within_the_grace_period(
    service: str, server_env: dict[str, str], chains_file: Path, tmp_path: Path
) -> None:
    port = free_tcp_port()
    argv, extra = _command(service, port)
    env = {
        **server_env,
        **extra,
        "PAGO_CHAINS_FILE": str(chains_file),
        "PAGO_WEBHOOK_ALLOW_LOOPBACK": "true",
    }
    log = (tmp_path / f"{service}.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, port)
        time.sleep(0.5)  # let consumers join and loops run once
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE_SECONDS)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / f"{service}.log").read_text()
    assert code == 0, f"{service} exited {code} after SIGTERM:\n{output[-3000:]}"
    assert took < GRACE_SECONDS
    assert "Traceback" not in output, output[-3000:]
