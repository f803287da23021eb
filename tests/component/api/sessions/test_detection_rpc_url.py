"""detection_rpc_url: from the chains registry (per network × mode) onto create, get and list."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.settings import ApiSettings
from pago.common.db.schema import checkout_sessions, outbox
from pago.common.enums import Mode
from pago.common.events import SESSION_EVENT_ADAPTER
from tests.support.api import TEST_RATES, Merchant, api_settings, crypto_body, running_app

URL = "/v1/checkout/sessions"
TRON_TEST_RPC = "https://nile.trongrid.example/"


async def test_null_when_the_registry_has_none(
    client: httpx.AsyncClient, merchant: Merchant
) -> None:
    created = await client.post(URL, json=crypto_body(), headers=merchant.headers())
    assert created.status_code == 201
    assert "detection_rpc_url" in created.json()
    assert created.json()["detection_rpc_url"] is None


async def test_create_get_list_and_the_created_event_carry_it(
    settings: ApiSettings, merchant: Merchant, db: AsyncEngine, tmp_path: Path
) -> None:
    chains = tmp_path / "chains.toml"
    chains.write_text(f'[networks.TRON.test]\ndetection_rpc_url = "{TRON_TEST_RPC}"\n')
    configured = api_settings(
        settings.database_url,
        settings.redis_url,
        settings.kafka_bootstrap_servers,
        static_rates=TEST_RATES,
        chains_file=str(chains),
    )
    async with running_app(configured) as (_, client):
        tron = await client.post(URL, json=crypto_body(), headers=merchant.headers())
        live = await client.post(URL, json=crypto_body(), headers=merchant.headers(Mode.LIVE))
        eth = await client.post(
            URL, json=crypto_body(network="ETHEREUM"), headers=merchant.headers()
        )
        assert tron.json()["detection_rpc_url"] == TRON_TEST_RPC
        # Per network × mode: live TRON and test ETHEREUM configure none.
        assert live.json()["detection_rpc_url"] is None
        assert eth.json()["detection_rpc_url"] is None
        session_id = tron.json()["id"]
        got = await client.get(f"{URL}/{session_id}", headers=merchant.headers())
        assert got.json()["detection_rpc_url"] == TRON_TEST_RPC
        listed = (await client.get(URL, headers=merchant.headers())).json()["data"]
        assert {s["id"]: s["detection_rpc_url"] for s in listed} == {
            session_id: TRON_TEST_RPC,
            eth.json()["id"]: None,
        }
    async with db.connect() as conn:
        stored = (
            await conn.execute(
                select(checkout_sessions.c.detection_rpc_url).where(
                    checkout_sessions.c.id == session_id
                )
            )
        ).scalar_one()
        [value] = (
            await conn.execute(
                select(outbox.c.value).where(
                    outbox.c.key == session_id, outbox.c.topic == "checkout.sessions"
                )
            )
        ).scalars()
    assert stored == TRON_TEST_RPC
    assert SESSION_EVENT_ADAPTER.validate_json(value).session.detection_rpc_url == TRON_TEST_RPC
