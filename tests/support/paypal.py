"""The local PayPal over real TCP for tests: its Mount in a small Starlette app under uvicorn, on a
free port, in the test's event loop (until the devstack's card-provider server mounts it)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from pago.devstack._support import free_tcp_port
from pago.devstack.cardproviders.context import ProviderContext
from pago.devstack.cardproviders.paypal import build
from tests.support.asgi import serve_asgi

CLIENT_ID = "AeDevstackClientId"
CLIENT_SECRET = "EDevstackClientSecret"
WEBHOOK_ID = "8PT597110X687430LKGECATA"


@dataclass
class LocalPayPal:
    ctx: ProviderContext
    root: str
    """``http://127.0.0.1:<port>``; the provider lives at ``root + "/paypal"``."""

    @property
    def url(self) -> str:
        return self.ctx.public_url

    async def control(self, **settings: Any) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.url}/_control", json=settings)
            response.raise_for_status()

    async def events(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/_events")
            response.raise_for_status()
            events: list[dict[str, Any]] = response.json()
            return events

    async def order_ids(self) -> list[str]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/_orders")
            response.raise_for_status()
            ids: list[str] = response.json()
            return ids

    async def token(self, client: httpx.AsyncClient) -> str:
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        response = await client.post(
            f"{self.url}/v1/oauth2/token",
            headers={"Authorization": f"Basic {basic}"},
            data={"grant_type": "client_credentials"},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


@contextlib.asynccontextmanager
async def local_paypal(webhook_url: str | None = None) -> AsyncIterator[LocalPayPal]:
    port = free_tcp_port()
    root = f"http://127.0.0.1:{port}"
    ctx = ProviderContext(
        public_url=f"{root}/paypal",
        webhook_url=webhook_url,
        secrets={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "webhook_id": WEBHOOK_ID},
    )
    async with serve_asgi(Starlette(routes=[build(ctx)]), port=port):
        yield LocalPayPal(ctx, root)
