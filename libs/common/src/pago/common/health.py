"""A tiny HTTP endpoint for Kubernetes probes and Prometheus (no framework, same event loop).

Every background service (matcher, notifier, watcher) serves the same paths:

- ``GET /healthz`` (``/livez``): 200 while the process's loops are alive.
- ``GET /readyz``: 200 while the process does its job, else 503; with a ``status`` callback the
  body is that JSON (a watcher reports its lag in blocks), otherwise plain text.
- ``GET /status``: the same JSON, always 200.
- ``GET /metrics``: Prometheus text exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping

from pago.common.metrics import render_latest

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


class HealthServer:
    def __init__(
        self,
        port: int,
        *,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        status: Callable[[], Mapping[str, object]] | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet
        metrics: Callable[[], tuple[bytes, str]] = render_latest,
    ) -> None:
        self._host = host
        self._port = port
        self._alive = alive
        self._ready = ready
        self._status = status
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS picked for 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b"method not allowed\n", _TEXT
        path = path.split("?", 1)[0]
        if path in ("/healthz", "/livez", "/health/live"):
            return (200, b"ok\n", _TEXT) if self._alive() else (503, b"dead\n", _TEXT)
        if path in ("/readyz", "/health/ready", "/status"):
            ready = self._ready()
            code = 200 if ready or path == "/status" else 503
            if self._status is None:
                return code, (b"ready\n" if ready else b"not ready\n"), _TEXT
            body = json.dumps({"ready": ready, **self._status()}, default=str).encode() + b"\n"
            return code, body, _JSON
        if path == "/metrics":
            data, content_type = self._metrics()
            return 200, data, content_type
        return 404, b"not found\n", _TEXT

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (line := await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                del line  # headers are not needed
            parts = request_line.decode("latin-1").split()
            status, body, content_type = (
                self._route(parts[0], parts[1]) if len(parts) >= 2 else (405, b"", _TEXT)
            )
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
