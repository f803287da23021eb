"""A tiny HTTP endpoint for Kubernetes probes and Prometheus: no framework, no extra process.

``GET /health/live`` answers while the event loop runs; ``GET /health/ready`` answers 200 only
while the consumer is running and not shutting down; ``GET /metrics`` is the text exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pago.common.metrics import render_latest

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    def __init__(self, port: int, *, ready: Callable[[], bool], host: str = "0.0.0.0") -> None:  # noqa: S104 - probes come from the kubelet
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
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
        text = "text/plain; charset=utf-8"
        if method != "GET":
            return 405, b"method not allowed\n", text
        path = path.split("?", 1)[0]
        if path in ("/health/live", "/healthz", "/livez"):
            return 200, b"ok\n", text
        if path in ("/health/ready", "/readyz"):
            return (200, b"ready\n", text) if self._ready() else (503, b"not ready\n", text)
        if path == "/metrics":
            body, content_type = render_latest()
            return 200, body, content_type
        return 404, b"not found\n", text

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
                self._route(parts[0], parts[1]) if len(parts) >= 2 else (405, b"", "text/plain")
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
