"""The watcher as a real process (``python -m pago.watcher``), as Kubernetes runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FAST = {
    "PAGO_WATCHER_POLL_INTERVAL": "0.1",
    "PAGO_WATCHER_CURSOR_INTERVAL": "0",
    "PAGO_WATCHER_RPC_BACKOFF_MAX": "1",
    "PAGO_LOG_LEVEL": "INFO",
}


class WatcherProcess:
    """One ``pago-watcher --network ETHEREUM --mode test``; its JSON log lines are collected."""

    def __init__(
        self,
        kafka: str,
        redis_url: str,
        chains: Path,
        **settings: str,
    ) -> None:
        self.env = {
            # No database: the watcher must not need one.
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "PAGO_DATABASE_URL")
            },
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "REDIS_URL": redis_url,
            "PAGO_CHAINS_FILE": str(chains),
            "PAGO_ENV": "test",
            "PAGO_WATCHER_HTTP_PORT": "0",
            **FAST,
            **settings,
        }
        self.logs: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pago.watcher", "--network", "ETHEREUM", "--mode", "test"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Keep draining stdout: a full pipe would freeze the process mid-publish.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port: int | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line.rstrip()})

    def logged(self, msg: str) -> dict[str, Any] | None:
        return next((e for e in self.logs if e.get("msg") == msg), None)

    def wait_log(self, msg: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.logged(msg)
            if entry is not None:
                return entry
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {msg!r} within {timeout} s; last lines: {self.logs[-15:]}")

    def started(self, timeout: float = 30.0) -> int:
        self.port = int(self.wait_log("watcher started", timeout)["http_port"])
        return self.port

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/status", timeout=2)
        data: dict[str, Any] = response.json()
        return data

    def until(self, probe: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status()
            if probe(last):
                return
            time.sleep(0.05)
        raise AssertionError(f"status never matched; last: {last}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=5)
