"""The api served by uvicorn on a real port, the local card-provider server beside it (its
webhooks go to the api over HTTP), and OAuth clients made the way ``pago-admin`` makes them.

Every provider's fake is wrapped in a counter of the requests it received, so a test can say
"exactly one provider create call" from the provider's side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.component.api.cards.support import (
    CallCounter,
    CardClient,
    CardStack,
    bind,
    card_settings,
    new_card_client,
    provider_server,
    serve_api,
)
from tests.support.api import Merchant, api_settings, seed_merchant


@pytest.fixture(scope="session")
async def card_stack(
    database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> AsyncIterator[CardStack]:
    sock = bind()
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    counter = CallCounter()
    with provider_server(api_url, counter) as providers:

        def settings_for() -> ApiSettings:
            return api_settings(
                database.url,
                redis_server.url,
                kafka.bootstrap_servers,
                cards=card_settings(providers),
            )

        async with (
            serve_api(settings_for, sock) as (app, settings),
            httpx.AsyncClient(base_url=api_url, timeout=30) as http,
        ):
            yield CardStack(api_url, app, settings, providers, counter, http)


@pytest.fixture
async def stack(card_stack: CardStack, db: AsyncEngine, redis: Any) -> AsyncIterator[CardStack]:
    """The running stack with an empty database and Redis, every provider OK, no calls counted."""
    for name in card_stack.providers.contexts:
        card_stack.providers.set_failure(name, FailureMode.OK)
        card_stack.providers.set_failure(name, FailureMode.OK, call="capture")
    card_stack.counter.reset()
    yield card_stack
    for name in card_stack.providers.contexts:
        card_stack.providers.set_failure(name, FailureMode.OK)
        card_stack.providers.set_failure(name, FailureMode.OK, call="capture")


@pytest.fixture
async def merchant(stack: CardStack, db: AsyncEngine) -> Merchant:
    return await seed_merchant(db, stack.settings)


@pytest.fixture
async def card_client(stack: CardStack, db: AsyncEngine, merchant: Merchant) -> CardClient:
    return await new_card_client(stack, db, merchant)
