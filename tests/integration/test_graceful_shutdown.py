"""Every service stops taking work on SIGTERM, finishes what is in flight and exits 0.

Kubernetes sends SIGTERM and waits ``terminationGracePeriodSeconds`` (30 s for the api, 60 s
for the others in deploy/) before SIGKILL. What is checked here is the stop itself: the process
was ready (consumers joined, loops running), it logs its last line and exits 0 without a
traceback. The wait for the exit is only a deadline for a hung process; how long a stop takes
depends on the machine's load and is not asserted.
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

EXIT_WAIT = 60
"""Seconds before a process that ignored SIGTERM fails the test (the longest grace period)."""
STOPPED = {
    "matcher": "matcher stopped",
    "notifier": "notifier stopped",
    "watcher": "watcher stopped",
    "api": "Finished server process",
}
"""Each service's last log line of a clean stop."""


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


def _wait_healthy(
    proc: subprocess.Popen[bytes], port: int, timeout: float = 60, path: str = "/healthz"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{proc.args!r} was not healthy within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("service", ["api", "matcher", "notifier", "watcher"])
def test_sigterm_stops_it_cleanly_with_exit_zero(
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
        # Ready: consumers joined and loops running (a stop before that proves less).
        _wait_healthy(proc, port, path="/readyz")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=EXIT_WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / f"{service}.log").read_text()
    assert code == 0, f"{service} exited {code} after SIGTERM:\n{output[-3000:]}"
    assert STOPPED[service] in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
