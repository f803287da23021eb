"""A JSON-RPC proxy in front of a real node, for tests that change what an endpoint shows."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession, web


class JsonRpcProxy:
    """Serves JSON-RPC on a free loopback port and forwards to ``upstream``; a subclass's
    ``_handle`` decides what to change on the way."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = ClientSession()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        return web.json_response(await self._forward(await request.json()))

    async def _forward(self, body: Any) -> Any:
        """``body`` as the upstream node answers it."""
        assert self._session is not None
        async with self._session.post(self.upstream, json=body) as response:
            return await response.json()
