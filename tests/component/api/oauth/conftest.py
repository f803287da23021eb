"""The app with a probe route per scope, a trusted external issuer served over real HTTP, and
OAuth clients made the way ``pago-admin`` makes them."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from joserfc.jwk import RSAKey
from redis.asyncio import Redis
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
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.support.api import Merchant, api_settings
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


@pytest.fixture(scope="session")
async def issuer() -> AsyncIterator[IssuerServer]:
    async with serving(IssuerServer()) as server:
        yield server


@pytest.fixture(scope="session")
def oauth_settings(
    database: Database, redis_server: RedisServer, kafka: KafkaServer, issuer: IssuerServer
) -> ApiSettings:
    return api_settings(
        database.url,
        redis_server.url,
        kafka.bootstrap_servers,
        oauth_trusted_issuers={
            EXTERNAL_ISSUER: {"jwks_url": issuer.url, "audience": EXTERNAL_AUDIENCE}
        },
        # An unknown kid refetches at most once an hour: a second one within it must not.
        oauth_external_jwks_min_refetch_seconds=3600.0,
    )


@pytest.fixture(scope="session")
async def oauth_app(
    oauth_settings: ApiSettings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with probed_app(oauth_settings) as running:
        yield running


@pytest.fixture
async def api(
    oauth_app: tuple[FastAPI, httpx.AsyncClient], db: AsyncEngine, redis: Redis
) -> httpx.AsyncClient:
    """The probed app, with an empty database and an empty Redis (rate-limit buckets)."""
    return oauth_app[1]


@pytest.fixture
def app(oauth_app: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return oauth_app[0]


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


@pytest.fixture
async def oauth_client(db: AsyncEngine, merchant: Merchant) -> Client:
    return await new_client(db, merchant)
