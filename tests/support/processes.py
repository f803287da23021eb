"""Pago's services as real processes, as Kubernetes runs them: the one helper every test that
starts ``pago-api``, ``pago-matcher``, ``pago-notifier``, ``pago-watcher`` (or the outbox relay)
uses.

A ``ServiceProcess`` runs a command with exactly the environment it is given and drains its
output on a thread (a full pipe would freeze the process mid-batch), keeping every line and the
JSON ones parsed. It waits for a log line or a healthy endpoint, failing at once with the last
lines when the process exits first, and stops it: ``terminate`` (SIGTERM and the exit code),
``kill`` (SIGKILL), ``stop`` (SIGTERM, then SIGKILL if it hangs) and ``close`` (SIGKILL if it
still runs) — use it as a context manager, or ``close`` it in a ``finally``, so that no test
leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

LogEntry = dict[str, Any]
"""One log line: the JSON object the service wrote, or ``{"msg": line}`` for any other line."""


def module(name: str, *args: str) -> list[str]:
    """``python -m name args…`` with this interpreter (the one the members are installed in)."""
    return [sys.executable, "-m", name, *args]


def entry_point(name: str, *args: str) -> list[str]:
    """An installed console script (``pago-api``, …) next to this interpreter, with ``args``."""
    return [str(Path(sys.executable).parent / name), *args]


def run_to_exit(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a command that must stop by itself (a start it refuses) with exactly ``env``, and
    give its exit code with stdout and stderr apart (the one-line reason is on stderr)."""
    return subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def _entry(line: str) -> LogEntry:
    try:
        value = json.loads(line)
    except ValueError:
        return {"msg": line}
    return value if isinstance(value, dict) else {"msg": line}


class ServiceProcess:
    """One process; stdout and stderr together, read line by line as they come."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.env = dict(env)
        self.lines: list[str] = []
        self.logs: list[LogEntry] = []
        self.proc = subprocess.Popen(
            list(argv),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # A group of its own: ``kill`` and ``close`` reach any worker it forked too.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name} output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip()
            self.lines.append(line)
            self.logs.append(_entry(line))

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def find(self, msg: str) -> LogEntry | None:
        """The first log entry whose ``msg`` is ``msg``, if any yet."""
        return next((e for e in self.logs if e.get("msg") == msg), None)

    def output(self) -> str:
        """Everything it wrote so far (all of it once ``stop``/``close`` returned)."""
        return "\n".join(self.lines)

    def tail(self, lines: int = 25) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.lines[-lines:])

    def _failure(self, what: str, timeout: float) -> AssertionError:
        code = self.proc.poll()
        why = f"exited with {code}" if code is not None else f"not within {timeout} s"
        return AssertionError(f"{self.name}: {what} ({why})\n{self.tail(15)}")

    def wait_log(self, msg: str, timeout: float = 30.0) -> LogEntry:
        """Block until the process logs ``msg``; its entry."""
        deadline = time.monotonic() + timeout
        while (entry := self.find(msg)) is None:
            if not self.running or time.monotonic() > deadline:
                raise self._failure(f"never logged {msg!r}", timeout)
            time.sleep(0.02)
        return entry

    async def wait_log_async(self, msg: str, timeout: float = 30.0) -> LogEntry:
        """``wait_log`` that lets this event loop run meanwhile (a server in it may have to
        answer the process)."""
        deadline = time.monotonic() + timeout
        while (entry := self.find(msg)) is None:
            if not self.running or time.monotonic() > deadline:
                raise self._failure(f"never logged {msg!r}", timeout)
            await asyncio.sleep(0.02)
        return entry

    async def wait_healthy(
        self, url: str, *, path: str = "/healthz", timeout: float = 30.0
    ) -> None:
        """Wait until ``url + path`` answers 200; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if not self.running or time.monotonic() > deadline:
                    raise self._failure(f"{path} never answered 200", timeout)
                try:
                    if (await client.get(f"{url}{path}", timeout=2)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit code (``TimeoutExpired`` if it hangs)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    async def terminate_async(self, timeout: float = 20.0) -> int:
        """``terminate`` that lets this event loop run while the process stops."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise self._failure("did not stop after SIGTERM", timeout)
            await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        """SIGKILL to the process and anything it forked: no shutdown code runs."""
        self._kill_group()
        self.proc.wait(timeout=10)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, SIGKILL if it is still running after ``timeout``; the exit code."""
        if self.running:
            try:
                self.terminate(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
        return self.proc.wait()

    def close(self) -> None:
        """SIGKILL if it (or a worker it forked) still runs; every line read."""
        if self.running:
            self.kill()
        else:
            self._kill_group()
        self._reader.join(timeout=5)


def api_process(env: Mapping[str, str], *args: str) -> ServiceProcess:
    """``python -m pago.api.main`` on 127.0.0.1 with exactly ``env`` (plus ``args``)."""
    return ServiceProcess("pago-api", module("pago.api.main", "--host", "127.0.0.1", *args), env)


WATCHER_FAST = {
    "PAGO_WATCHER_POLL_INTERVAL": "0.1",
    "PAGO_WATCHER_CURSOR_INTERVAL": "0",
    "PAGO_WATCHER_RPC_BACKOFF_MAX": "1",
    "PAGO_LOG_LEVEL": "INFO",
}
"""A watcher that polls often and writes its cursor at every move."""


class WatcherProcess(ServiceProcess):
    """``pago-watcher --network … --mode …`` on this run's broker and Redis, and no database
    (the watcher must not need one); ``settings`` are more environment variables."""

    def __init__(
        self,
        kafka: str,
        redis_url: str,
        chains: Path,
        *,
        network: str = "ETHEREUM",
        mode: str = "test",
        **settings: str,
    ) -> None:
        env = {
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
            **WATCHER_FAST,
            **settings,
        }
        argv = module("pago.watcher", "--network", network, "--mode", mode)
        super().__init__(f"pago-watcher {network} {mode}", argv, env)
        self.port: int | None = None

    def started(self, timeout: float = 30.0) -> int:
        """Wait for the start line; the health and status port."""
        self.port = int(self.wait_log("watcher started", timeout)["http_port"])
        return self.port

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/status", timeout=2)
        data: dict[str, Any] = response.json()
        return data

    def until(self, probe: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
        """Poll ``/status`` until ``probe`` holds."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status()
            if probe(last):
                return
            time.sleep(0.05)
        raise AssertionError(f"status never matched; last: {last}")
