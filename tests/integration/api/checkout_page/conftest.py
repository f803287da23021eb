"""Two api replicas on real ports (uvicorn, in-process) over one Postgres and one Redis.

SSE needs a real server: httpx's in-process ASGI transport waits for the whole body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.app import create_app
from pago.api.settings import ApiSettings
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.support.api import Merchant, api_settings, seed_merchant
from tests.support.asgi import serve_asgi


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a free port of 127.0.0.1 with its lifespan; yields the base URL."""
    async with serve_asgi(app, lifespan="on") as url:
        yield url


@pytest.fixture(scope="module")
def settings(database: Database, redis_server: RedisServer, kafka: KafkaServer) -> ApiSettings:
    return api_settings(database.url, redis_server.url, kafka.bootstrap_servers)


@pytest.fixture(scope="module")
async def replicas(settings: ApiSettings) -> AsyncIterator[list[str]]:
    """Base URLs of two api processes' worth of app (each with its own lifespan)."""
    async with serve(create_app(settings)) as first, serve(create_app(settings)) as second:
        yield [first, second]


@pytest.fixture
async def merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    return await seed_merchant(db, settings)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
