"""Every service stops taking work on SIGTERM, finishes what is in flight and exits 0.

Kubernetes sends SIGTERM and waits ``terminationGracePeriodSeconds`` (30 s for the api, 60 s
for the others in deploy/) before SIGKILL. What is checked here is the stop itself: the process
was ready (consumers joined, loops running), it logs its last line and exits 0 without a
traceback. The wait for the exit is only a deadline for a hung process; how long a stop takes
depends on the machine's load and is not asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from tests.support.processes import ServiceProcess, entry_point

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
    if service == "api":
        return entry_point("pago-api", "--host", "127.0.0.1", "--port", str(port)), {}
    if service == "watcher":
        argv = entry_point("pago-watcher", "--network", "ETHEREUM", "--mode", "test")
        return argv, {"PAGO_WATCHER_HTTP_PORT": str(port)}
    return entry_point(f"pago-{service}"), {f"PAGO_{service.upper()}_HTTP_PORT": str(port)}


@pytest.mark.slow
@pytest.mark.parametrize("service", ["api", "matcher", "notifier", "watcher"])
async def test_sigterm_stops_it_cleanly_with_exit_zero(
    service: str, server_env: dict[str, str], chains_file: Path
) -> None:
    port = free_tcp_port()
    argv, extra = _command(service, port)
    env = {
        **server_env,
        **extra,
        "PAGO_CHAINS_FILE": str(chains_file),
        "PAGO_WEBHOOK_ALLOW_LOOPBACK": "true",
    }
    url = f"http://127.0.0.1:{port}"
    with ServiceProcess(service, argv, env) as proc:
        await proc.wait_healthy(url, timeout=60)
        # Ready: consumers joined and loops running (a stop before that proves less).
        await proc.wait_healthy(url, path="/readyz", timeout=60)
        code = await asyncio.to_thread(proc.terminate, EXIT_WAIT)
    output = proc.output()
    assert code == 0, f"{service} exited {code} after SIGTERM:\n{output[-3000:]}"
    assert STOPPED[service] in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
