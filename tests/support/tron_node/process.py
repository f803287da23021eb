"""A ``TronNode`` in a subprocess (its own CPU), driven over its ``/_node/*`` control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]


class TronNodeProcess:
    def __init__(self, *args: str) -> None:
        """Start ``python -m tests.support.tron_node *args`` and wait for its URL."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.tron_node", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"the TRON node did not start (exit {self.proc.returncode})")
        self.url: str = json.loads(line)["url"]
        self._http = httpx.Client(base_url=self.url, timeout=600)

    def control(self, command: str, **body: Any) -> dict[str, Any]:
        response = self._http.post(f"/_node/{command}", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def close(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> TronNodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
