"""The matcher as a real process (``python -m pago.matcher``), as Kubernetes would run it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tests.support.matcher import BASE_URL, aml_dir

FAST_GROUP = {
    # A SIGKILLed member holds its partitions until the group gives up on it (and the mock
    # broker treats a member that left cleanly the same way); production keeps 10 s, the tests
    # restart within about a second of it.
    "PAGO_MATCHER_SESSION_TIMEOUT_MS": "1000",
    "PAGO_MATCHER_HEARTBEAT_MS": "250",
}


class MatcherProcess:
    """One ``pago-matcher`` process; its JSON log lines are collected as they come."""

    def __init__(self, env: Mapping[str, str], *, group_id: str, **settings: str) -> None:
        self.env = {
            **env,
            "PAGO_MATCHER_HTTP_PORT": "0",
            "PAGO_AML_LIST_PATH": str(aml_dir()),
            "PAGO_CHECKOUT_BASE_URL": BASE_URL,
            "PAGO_MATCHER_BATCH_WAIT_MS": "20",
            "PAGO_MATCHER_FETCH_WAIT_MS": "50",
            "PAGO_MATCHER_RETRY_MAX_BACKOFF": "0.5",
            **FAST_GROUP,
            "PAGO_MATCHER_GROUP_ID": group_id,
            **settings,
        }
        self.logs: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pago.matcher"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Keep draining stdout: a full pipe would freeze the process mid-batch.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line.rstrip()})

    def started(self, timeout: float = 20.0) -> int:
        """Wait for the start log line; return the health port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs:
                if entry.get("msg") == "matcher started":
                    return int(entry["http_port"])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the matcher did not start: {self.logs[-20:]}")

    def get(self, port: int, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=5)
