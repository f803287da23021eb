"""An ASGI app served by uvicorn on 127.0.0.1 inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    port: int = 0,
    sock: socket.socket | None = None,
    lifespan: Literal["on", "off"] = "off",
) -> AsyncIterator[str]:
    """Serve ``app`` (on ``port``, 0 for a free one, or on a bound ``sock``) until the block
    ends; yields its base URL once the socket accepts. A server that fails to start raises
    here rather than hanging the test."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock] if sock is not None else None))
    while not server.started:  # set once the lifespan ran and the socket listens
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        await task
