"""The app with a probe route per scope, a trusted external issuer served over real HTTP, and
OAuth clients made the way ``pago-admin`` makes them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.component.api.oauth.support import (
    EXTERNAL_AUDIENCE,
    EXTERNAL_ISSUER,
    Client,
    IssuerServer,
    new_client,
    probed_app,
    serving,
)
from tests.support.api import Merchant, api_settings


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


@pytest.fixture
async def oauth_client(db: AsyncEngine, merchant: Merchant) -> Client:
    return await new_client(db, merchant)
