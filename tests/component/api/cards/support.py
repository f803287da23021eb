"""Helpers of the tests in this folder."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from pago.api.admin import service as admin
from pago.api.app import create_app
from pago.api.cards.settings import CardSettings
from pago.api.settings import ApiSettings
from pago.common.enums import CardProvider, Mode
from pago.devstack.cardproviders.context import ProviderContext
from pago.devstack.cardproviders.server import Builder, CardProviderServer, default_providers
from tests.support.api import Merchant
from tests.support.asgi import serve_asgi

SEED_BODY: dict[str, Any] = json.loads(
    (Path(__file__).parents[3] / "support" / "cards" / "seed_request.json").read_text()
)


SEED_RAW = (Path(__file__).parents[3] / "support" / "cards" / "seed_request.json").read_bytes()


CREATE_PATHS = {
    "stripe": "/v1/checkout/sessions",
    "adyen": "/sessions",
    "paypal": "/v2/checkout/orders",
}
"""The tail of each provider's create path (Adyen's carries its API version before it)."""


CREATE_TIMEOUT = 1.0


class CallCounter:
    """Every request a provider's fake received: ``creates("stripe")``."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()

    def wrap(self, name: str, build: Builder) -> Builder:
        def built(ctx: ProviderContext) -> Mount:
            mount = build(ctx)
            inner = mount.app

            async def counting(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    self.calls[(name, scope["method"], str(scope["path"]))] += 1
                await inner(scope, receive, send)

            app: ASGIApp = counting
            return Mount(mount.path, app=app)

        return built

    def creates(self, provider: str) -> int:
        tail = CREATE_PATHS[provider]
        return sum(
            n
            for (name, method, path), n in self.calls.items()
            if name == provider and method == "POST" and path.endswith(tail)
        )

    def reset(self) -> None:
        self.calls.clear()


@dataclass
class CardStack:
    api_url: str
    app: FastAPI
    settings: ApiSettings
    providers: CardProviderServer
    counter: CallCounter
    http: httpx.AsyncClient


def card_settings(providers: CardProviderServer, **overrides: Any) -> CardSettings:
    values: dict[str, Any] = {
        key.removeprefix("PAGO_CARD_").lower(): value for key, value in providers.env_vars().items()
    }
    values.update(
        enabled_providers=[CardProvider(name) for name in providers.contexts],
        create_timeout_seconds=CREATE_TIMEOUT,
        create_deadline_seconds=10.0,
        jobs_interval_seconds=3600.0,  # tests run the jobs' passes themselves
        stats_cache_seconds=0.0,
    )
    values.update(overrides)
    return CardSettings.model_validate(values)


@contextlib.asynccontextmanager
async def serve_api(
    settings_for: Any, bound: socket.socket
) -> AsyncIterator[tuple[FastAPI, ApiSettings]]:
    settings: ApiSettings = settings_for()
    app = create_app(settings)
    async with serve_asgi(app, sock=bound, lifespan="on"):
        yield app, settings


def bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def provider_server(api_url: str, counter: CallCounter) -> Iterator[CardProviderServer]:
    builders = {name: counter.wrap(name, build) for name, build in default_providers().items()}
    with CardProviderServer(webhook_base_url=api_url, providers=builders) as server:
        yield server


@dataclass(frozen=True)
class CardClient:
    client_id: str
    secret: str
    merchant_id: str
    token: str

    def headers(self, idempotency_key: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        headers.update(extra)
        return headers


async def new_card_client(
    stack: CardStack, db: AsyncEngine, merchant: Merchant, *, mode: Mode = Mode.TEST
) -> CardClient:
    """A client made as ``pago-admin oauth-client create`` makes it, and a token from the real
    ``POST /oauth/token``."""
    pepper = stack.settings.api_key_pepper
    assert pepper is not None
    async with db.begin() as conn:
        made = await admin.create_oauth_client(
            conn, merchant.id, mode=mode, pepper=pepper.get_secret_value().encode()
        )
    assert made.client_secret is not None
    basic = base64.b64encode(f"{made.client_id}:{made.client_secret}".encode()).decode()
    response = await stack.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    return CardClient(
        made.client_id, made.client_secret, merchant.id, response.json()["access_token"]
    )


def seed_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(SEED_BODY))
    body.update(changes)
    return body


def counts(stack: CardStack) -> Mapping[str, int]:
    return {name: stack.counter.creates(name) for name in stack.providers.contexts}
