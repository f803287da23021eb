"""A tiny HTTP endpoint for Kubernetes probes and Prometheus: no framework, no extra process.

``GET /healthz`` answers while the event loop runs; ``GET /readyz`` answers 200 only while the
consumer and the delivery worker run and the process is not stopping; ``GET /metrics`` is the
Prometheus text exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from pago.common.metrics import render_latest

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_TEXT = "text/plain; charset=utf-8"


class HealthServer:
    def __init__(self, port: int, *, ready: Callable[[], bool], host: str = "0.0.0.0") -> None:  # noqa: S104 - probes come from the kubelet
        self._host = host
        self._port = port
        self._ready = ready
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

    def route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b"method not allowed\n", _TEXT
        path = path.split("?", 1)[0]
        if path in ("/healthz", "/livez", "/health/live"):
            return 200, b"ok\n", _TEXT
        if path in ("/readyz", "/health/ready"):
            return (200, b"ready\n", _TEXT) if self._ready() else (503, b"not ready\n", _TEXT)
        if path == "/metrics":
            body, content_type = render_latest()
            return 200, body, content_type
        return 404, b"not found\n", _TEXT

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            # Headers are not needed, but must be read off the socket before answering.
            while await asyncio.wait_for(reader.readline(), timeout=5) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            status, body, content_type = (
                self.route(parts[0], parts[1]) if len(parts) >= 2 else (405, b"", _TEXT)
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
