"""The local Adyen on a real port (uvicorn, in-process), until the card-provider server mounts it.

``serve_adyen`` starts a Starlette app holding only the ``/adyen`` mount on a free port of
127.0.0.1 and yields the running ``LocalAdyen``: its base URL (what an adapter is configured
with), its secrets and the fake's state (sessions, deliveries, faults).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette

from pago.devstack._support import free_tcp_port
from pago.devstack.cardproviders.adyen import AdyenFake, Delivery
from pago.devstack.cardproviders.context import ProviderContext
from tests.support.asgi import serve_asgi

HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
"""Adyen's published example HMAC key (public on purpose: its test vector is signed with it)."""
SECRETS = {
    "api_key": "AQE-local-test-key",
    "merchant_account": "PagoTestECOM",
    "hmac_key": HMAC_KEY,
}


@dataclass
class LocalAdyen:
    base_url: str
    """``http://127.0.0.1:<port>/adyen``"""
    fake: AdyenFake

    @property
    def ctx(self) -> ProviderContext:
        return self.fake.ctx

    async def wait_for_delivery(
        self, condition: Callable[[Delivery], bool], timeout: float = 15.0
    ) -> Delivery:
        """The first delivery for which ``condition`` holds, once it does."""
        deadline = time.monotonic() + timeout
        while True:
            for delivery in self.fake.deliveries:
                if condition(delivery):
                    return delivery
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.fake.deliveries)} deliveries, none matching")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def serve_adyen(
    webhook_url: str | None = None, secrets: dict[str, str] | None = None
) -> AsyncIterator[LocalAdyen]:
    port = free_tcp_port()
    ctx = ProviderContext(
        public_url=f"http://127.0.0.1:{port}/adyen",
        webhook_url=webhook_url,
        secrets=dict(SECRETS if secrets is None else secrets),
    )
    fake = AdyenFake(ctx)
    try:
        async with serve_asgi(Starlette(routes=[fake.mount()]), port=port):
            yield LocalAdyen(ctx.public_url, fake)
    finally:
        await fake.aclose()
