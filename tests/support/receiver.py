"""A merchant's webhook receiver for tests: a real HTTP/1.1 server on 127.0.0.1.

Each path answers from its script (a queue of ``Reply``; 200 once the queue is empty) and
records every request with its headers, raw body and arrival time. ``verify`` checks both
signature schemes the way a merchant would: ``X-Signature`` with the whole ``whsec_…`` string
as the HMAC key, and ``webhook-signature`` with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook

_REASONS = {200: "OK", 204: "No Content", 410: "Gone", 429: "Too Many Requests"}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a slow endpoint)."""
    body: bytes = b"ok"
    hold: asyncio.Event | None = None
    """Answer only once this is set (an endpoint that hangs until the test lets it go)."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """``time.monotonic()`` when the body had arrived."""

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._connections: set[asyncio.StreamWriter] = set()
        self.in_flight: dict[str, int] = {}
        """Requests per path received and not yet answered."""
        self.most_in_flight: dict[str, int] = {}
        """The most requests of a path that were ever in flight at once."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Connections a client keeps alive would hold wait_closed() open.
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()
        self.most_in_flight.clear()

    async def wait_for(self, condition: Callable[[Receiver], bool], timeout: float = 15.0) -> None:
        """Until ``condition(self)`` holds; ``TimeoutError`` says how much had arrived."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                paths = sorted({r.path for r in self.requests})
                raise TimeoutError(f"{len(self.requests)} requests arrived (paths {paths})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.1))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = request_line.decode("latin-1").split()[1]
                self.requests.append(Received(path, headers, body, time.monotonic()))
                self._changed.set()
                queue = self.scripts.get(path)
                reply = queue.pop(0) if queue else Reply()
                self.in_flight[path] = self.in_flight.get(path, 0) + 1
                self.most_in_flight[path] = max(
                    self.most_in_flight.get(path, 0), self.in_flight[path]
                )
                try:
                    if reply.delay:
                        await asyncio.sleep(reply.delay)
                    if reply.hold is not None:
                        await reply.hold.wait()
                finally:
                    self.in_flight[path] -= 1
                head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
                head += [f"{k}: {v}" for k, v in reply.headers.items()]
                head += [f"Content-Length: {len(reply.body)}", "", ""]
                writer.write("\r\n".join(head).encode("latin-1") + reply.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def x_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What an IronixPay integration computes."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(request: Received, secret: str, *, previous: str | None = None) -> dict[str, Any]:
    """Check both schemes for ``secret`` (and ``previous`` where a rotation is under way);
    return the parsed event. Raises on any mismatch."""
    h = request.headers
    assert h["content-type"] == "application/json"
    assert h["x-timestamp"] == h["webhook-timestamp"]
    assert abs(int(h["x-timestamp"]) - time.time()) < 60
    assert hmac.compare_digest(
        h["x-signature"], x_signature(secret, h["x-timestamp"], request.body)
    )
    event: dict[str, Any] = Webhook(secret).verify(request.body, h)
    assert h["webhook-id"] == event["id"]
    if previous is None:
        assert "x-signature-previous" not in h
        assert len(h["webhook-signature"].split(" ")) == 1
    else:
        expected = x_signature(previous, h["x-timestamp"], request.body)
        assert hmac.compare_digest(h["x-signature-previous"], expected)
        assert Webhook(previous).verify(request.body, h) == event
    return event
