"""Events really reach the broker: the outbox relay in the api, and the test helper."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.addresses.codec import normalize_address
from pago.api.settings import ApiSettings
from pago.common.db.schema import outbox
from pago.common.enums import ChainFamily, Mode
from pago.common.events import SessionCreated, SessionUpdated, TransferObserved, WatchAddress
from pago.common.topics import CHAIN_TRANSFERS, CHAIN_WATCHLIST, CHECKOUT_SESSIONS
from pago.devstack.kafka_mock import KafkaServer
from tests.support.api import Merchant, assert_error, crypto_body, running_app
from tests.support.kafka import read_topic

URL = "/v1/checkout/sessions"
Records = list[ConsumerRecord[bytes, bytes]]


@pytest.fixture
async def relaying(
    settings: ApiSettings, db: AsyncEngine, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """The api with its outbox relay running, as in production."""
    async with running_app(settings.model_copy(update={"run_outbox_relay": True})) as (_, client):
        yield client


def values(records: Records, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    found = []
    for record in records:
        if record.value is not None:
            value = json.loads(record.value)
            if match(value):
                found.append(value)
    return found


class TestOutboxReachesKafka:
    async def test_created_and_watch_events_are_published(
        self, relaying: httpx.AsyncClient, merchant: Merchant, kafka: KafkaServer, db: AsyncEngine
    ) -> None:
        session = (await relaying.post(URL, json=crypto_body(), headers=merchant.headers())).json()
        sessions = await read_topic(
            kafka.bootstrap_servers,
            CHECKOUT_SESSIONS,
            key_prefix=session["id"],
            until=lambda r: len(r) >= 1,
        )
        created = SessionCreated.model_validate_json(sessions[0].value or b"")
        assert json.loads(created.session.model_dump_json()) == session
        assert dict(sessions[0].headers)["event_type"] == b"session.created"

        def is_mine(value: dict[str, Any]) -> bool:
            return bool(value.get("session_id") == session["id"])

        key = f"TRON:test:{session['pay_address']}"
        watch = await read_topic(
            kafka.bootstrap_servers,
            CHAIN_WATCHLIST,
            key_prefix=key,
            until=lambda r: bool(values(r, is_mine)),
        )
        event = WatchAddress.model_validate(values(watch, is_mine)[0])
        assert (event.address, event.mode) == (session["pay_address"], Mode.TEST)

        await relaying.post(f"{URL}/{session['id']}/expire", headers=merchant.headers())
        both = await read_topic(
            kafka.bootstrap_servers,
            CHECKOUT_SESSIONS,
            key_prefix=session["id"],
            until=lambda r: len(r) >= 2,
        )
        updated = SessionUpdated.model_validate_json(both[1].value or b"")
        assert updated.session.status == "Expired"
        assert updated.previous_status == "Pending"
        async with db.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0


class TestTransferHelper:
    async def test_publishes_a_transfer_to_the_sessions_address(
        self, relaying: httpx.AsyncClient, merchant: Merchant, kafka: KafkaServer
    ) -> None:
        session = (await relaying.post(URL, json=crypto_body(), headers=merchant.headers())).json()
        path = f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers"
        response = await relaying.post(path, json={"amount": "10.5"}, headers=merchant.headers())
        assert response.status_code == 202, response.text
        sent = TransferObserved.model_validate(response.json())
        assert (sent.network, sent.mode, sent.token) == ("TRON", "test", "USDT")
        assert sent.contract == session["currency_contract"]
        assert sent.to_address == session["pay_address"]
        assert (sent.amount_raw, sent.decimals, sent.stage, sent.confirmations) == (
            10_500_000,
            6,
            "confirmed",
            19,
        )
        assert normalize_address(ChainFamily.TRON, sent.from_address) == sent.from_address

        def is_this(value: dict[str, Any]) -> bool:
            return bool(value.get("tx_hash") == sent.tx_hash)

        records = await read_topic(
            kafka.bootstrap_servers,
            CHAIN_TRANSFERS,
            key_prefix=f"TRON:{session['pay_address']}",
            until=lambda r: bool(values(r, is_this)),
        )
        assert TransferObserved.model_validate(values(records, is_this)[0]) == sent

    async def test_sender_and_stage_can_be_chosen(
        self, relaying: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        body = crypto_body(network="ETHEREUM", currency="USDC", pricing_currency="USDC")
        session = (await relaying.post(URL, json=body, headers=merchant.headers())).json()
        path = f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers"
        sender = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
        response = await relaying.post(
            path,
            json={"amount": "3", "from_address": sender, "stage": "detected"},
            headers=merchant.headers(),
        )
        got = response.json()
        assert got["from_address"] == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        assert (got["stage"], got["confirmations"], got["amount_raw"]) == ("detected", 0, 3_000_000)
        assert got["tx_hash"].startswith("0x")
        assert len(got["tx_hash"]) == 66

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"amount": "0"}, "amount"),
            ({"amount": "1.0000001"}, "amount"),
            ({"amount": "abc"}, "amount"),
            ({"amount": "1", "from_address": "0xnope"}, "from_address"),
            ({"amount": "1", "stage": "final"}, "stage"),
            ({}, "amount"),
        ],
    )
    async def test_invalid_bodies(
        self, relaying: httpx.AsyncClient, merchant: Merchant, body: dict[str, str], param: str
    ) -> None:
        session = (await relaying.post(URL, json=crypto_body(), headers=merchant.headers())).json()
        path = f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers"
        response = await relaying.post(path, json=body, headers=merchant.headers())
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param

    async def test_live_keys_and_unknown_sessions_are_refused(
        self, relaying: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        live = (
            await relaying.post(URL, json=crypto_body(), headers=merchant.headers(Mode.LIVE))
        ).json()
        path = f"/v1/test_helpers/checkout/sessions/{live['id']}/transfers"
        response = await relaying.post(
            path, json={"amount": "1"}, headers=merchant.headers(Mode.LIVE)
        )
        assert_error(response, 403, "test_mode_only")
        # A test key cannot see the live session.
        response = await relaying.post(path, json={"amount": "1"}, headers=merchant.headers())
        assert_error(response, 404, "resource_missing")
