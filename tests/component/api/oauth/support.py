"""Helpers of the tests in this folder."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from joserfc.jwk import RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pago.api.admin import service as admin
from pago.api.app import create_app
from pago.api.oauth.dependencies import ClientAuth, SessionsRead, SessionsWrite
from pago.api.oauth.principal import ClientPrincipal
from pago.api.settings import ApiSettings
from pago.common.enums import Mode
from tests.support.api import Merchant
from tests.support.asgi import serve_asgi

EXTERNAL_ISSUER = "https://idp.example.test"


EXTERNAL_AUDIENCE = "pago-cards"


PEPPER = b"pago-dev-only-pepper-not-for-production"


probe = APIRouter()


def _view(client: ClientPrincipal) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "merchant_id": client.merchant_id,
        "mode": client.mode.value,
        "scopes": sorted(client.scopes),
        "issuer": client.issuer,
    }


@probe.get("/probe/write")
async def write(client: SessionsWrite) -> dict[str, Any]:
    return _view(client)


@probe.get("/probe/read")
async def read(client: SessionsRead) -> dict[str, Any]:
    return _view(client)


@probe.get("/probe/any")
async def any_scope(client: ClientAuth) -> dict[str, Any]:
    return _view(client)


@dataclass
class IssuerServer:
    """A trusted OIDC issuer's JWKS endpoint on 127.0.0.1 (uvicorn), with keys the test holds."""

    keys: list[RSAKey] = field(default_factory=list)
    fetches: int = 0
    url: str = ""

    def add_key(self) -> RSAKey:
        key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)
        self.keys.append(key)
        return key

    async def jwks(self, request: Request) -> JSONResponse:
        self.fetches += 1
        return JSONResponse({"keys": [k.as_dict(private=False) for k in self.keys]})


@contextlib.asynccontextmanager
async def serving(server: IssuerServer) -> AsyncIterator[IssuerServer]:
    app = Starlette(routes=[Route("/jwks", server.jwks)])
    async with serve_asgi(app) as url:
        server.url = f"{url}/jwks"
        yield server


@contextlib.asynccontextmanager
async def probed_app(settings: ApiSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    app.include_router(probe)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield app, client


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    merchant_id: str

    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def new_client(
    db: AsyncEngine, merchant: Merchant, *, mode: Mode = Mode.TEST, scopes: list[str] | None = None
) -> Client:
    async with db.begin() as conn:
        made = await admin.create_oauth_client(
            conn, merchant.id, mode=mode, pepper=PEPPER, scopes=scopes
        )
    assert made.client_secret is not None
    return Client(made.client_id, made.client_secret, merchant.id)
