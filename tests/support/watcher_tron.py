"""What the TRON watcher's tests share: a chains file for the local node, TRON watch entries,
settings with test timings, the watcher as a process, and reading what reached the broker.

The watcher under test always runs for real (``create_app`` in-process, or ``pago-watcher
--network TRON`` as a subprocess) against a ``TronNode`` (``tests/support/tron_node``), a real
Kafka-protocol broker and a real Redis; nothing of the watcher is replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pago.common.enums import Network
from pago.common.events import TransferObserved
from pago.watcher.settings import WatcherSettings
from tests.support.tron_node import TronChain, Tx, b58, key_of
from tests.support.watcher import by_stage, read_transfers
from tests.support.watcher import watch as watch_addresses

NETWORK = "TRON"
MODE = "test"
USDT_CONTRACT = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
"""The registry's USDT in TRON test mode (Nile); the local node's logs name it."""
USDT_KEY = key_of(USDT_CONTRACT)
USDT = 10**6
"""One 6-decimal USDT in base units."""
CONFIRMATIONS = 19
"""The registry's depth for TRON (not overridden here: the tests run at the real one)."""


def chains_file(path: Path, *urls: str, genesis: str, confirmations: int | None = None) -> Path:
    """A registry override pointing TRON test mode at local nodes (the token stays Nile's);
    ``genesis``: the local chain's block 0 id (the watcher refuses a node on another chain)."""
    lines = [f"[networks.{NETWORK}.test]", 'name = "local TRON node (tests)"']
    lines.append(f'genesis_hash = "{genesis}"')
    if confirmations is not None:
        lines.append(f"confirmations = {confirmations}")
    lines.append("rpc_urls = [" + ", ".join(repr(u) for u in urls) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


def new_chain(**options: Any) -> TronChain:
    return TronChain(tokens=[USDT_KEY], **options)


def new_addresses(n: int) -> list[str]:
    """Fresh deposit addresses (``T…``; watch-only, nobody holds their keys)."""
    return [b58(secrets.token_bytes(20)) for _ in range(n)]


def tron_settings(bootstrap: str, redis_url: str, chains: Path, **over: object) -> WatcherSettings:
    values: dict[str, object] = {
        "network": NETWORK,
        "mode": MODE,
        "kafka_bootstrap_servers": bootstrap,
        "redis_url": redis_url,
        "chains_file": str(chains),
        "env": "test",
        "http_port": 0,
        "poll_interval": 0.1,
        "cursor_interval": 0.0,
        "lease_ttl": 3.0,
        "lease_renew": 0.5,
        "lease_retry": 0.3,
        "rpc_timeout": 3.0,
        "rpc_backoff_max": 0.5,
        "shutdown_timeout": 10.0,
        **over,
    }
    return WatcherSettings.model_validate(values)


async def watch(
    bootstrap: str,
    addresses: Iterable[str],
    *,
    until: datetime | None = None,
    created_at: datetime | None = None,
) -> None:
    """Publish ``WatchAddress`` for each TRON address, as the api's outbox does."""
    await watch_addresses(
        bootstrap,
        addresses,
        until=until,
        created_at=created_at,
        network=Network.TRON,
        session_of=lambda address: f"cs_{address[1:11].lower()}",
    )


async def pay_each_until_confirmed(
    chain: TronChain, bootstrap: str, addresses: Sequence[str]
) -> tuple[list[Tx], list[TransferObserved]]:
    """Pay each of ``addresses`` USDT (the n-th ``n`` USDT), mine the confirmations, and read
    ``chain.transfers`` until that many are confirmed: the payments and what was read."""
    txs = [
        chain.trc20_transfer(USDT_KEY, key_of(a), (i + 1) * USDT) for i, a in enumerate(addresses)
    ]
    chain.mine(CONFIRMATIONS + 1)
    seen = await read_transfers(bootstrap, lambda f: len(by_stage(f)["confirmed"]) >= len(txs))
    return txs, seen


def stages_of(transfers: Iterable[TransferObserved], txid: str) -> list[str]:
    return [t.stage.value for t in transfers if t.tx_hash == txid]


class WatcherProcess:
    """``pago-watcher --network TRON --mode test`` as Kubernetes runs it; JSON logs kept."""

    def __init__(self, kafka: str, redis_url: str, chains: Path, **settings: str) -> None:
        env: Mapping[str, str] = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "REDIS_URL": redis_url,
            "PAGO_CHAINS_FILE": str(chains),
            "PAGO_ENV": "test",
            "PAGO_WATCHER_HTTP_PORT": "0",
            "PAGO_WATCHER_POLL_INTERVAL": "0.1",
            "PAGO_WATCHER_CURSOR_INTERVAL": "0",
            "PAGO_WATCHER_RPC_BACKOFF_MAX": "1",
            "PAGO_LOG_LEVEL": "INFO",
            **settings,
        }
        self.logs: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pago.watcher", "--network", NETWORK, "--mode", MODE],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Keep draining stdout: a full pipe would freeze the process mid-publish.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line.rstrip()})

    async def wait_log(self, msg: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first log line saying ``msg`` (awaited: a node in this event loop must keep
        answering the process meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = next((e for e in self.logs if e.get("msg") == msg), None)
            if entry is not None:
                return entry
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {msg!r} within {timeout} s; last lines: {self.logs[-15:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=5)
