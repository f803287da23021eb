"""Issue 11, item 4: a watch address that reaches the watcher late is still back-filled from the
session's creation, however late.

The api runs without its outbox relay (a stalled relay, or Kafka down): the session is created
and paid on anvil, and the chain moves on more than 1,000 blocks — past the watcher's old fixed
back-fill window — before the relay runs (``python -m pago.common.outbox``) and the
``WatchAddress`` reaches the watcher. The payment must still credit: api, relay, watcher and
matcher run as processes; nothing in between is faked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from tests.component.watcher.support import USDT, chains_file
from tests.e2e.test_evm_payment import Service, _admin, _bin, _until, evm_account_xpub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OLD_WINDOW = 1000
"""The watcher's fixed back-fill before issue 11 (``PAGO_WATCHER_BACKFILL_BLOCKS``)."""


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    with Anvil.start(tmp_path / "anvil") as node:
        yield node


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    server = KafkaServer.start(env={})
    try:
        yield server
    finally:
        server.close()


async def test_a_payment_made_while_the_relay_stalled_credits_after_the_old_window(
    server_env: dict[str, str],
    db: AsyncEngine,
    anvil: Anvil,
    broker: KafkaServer,
    tmp_path: Path,
    run_id: str,
) -> None:
    port = free_tcp_port()
    kafka = broker.bootstrap_servers
    env = {
        **server_env,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "PAGO_CHAINS_FILE": str(chains_file(tmp_path / "chains.toml", anvil, confirmations=2)),
        "PAGO_CHECKOUT_BASE_URL": f"http://127.0.0.1:{port}/checkout/",
        "PAGO_LOG_LEVEL": "INFO",
        "PAGO_MATCHER_HTTP_PORT": "0",
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_WATCHER_HTTP_PORT": "0",
        "PAGO_WATCHER_POLL_INTERVAL": "0.2",
    }
    env.pop("PAGO_AML_LIST_PATH", None)
    merchant = f"mch_late_{run_id}"
    _admin(env, "--json", "merchant", "create", "--id", merchant, "--name", "Late Shop")
    key = str(json.loads(_admin(env, "--json", "key", "create", merchant, "--mode", "test"))["key"])
    _admin(
        env, "xpub", "register", merchant, "--family", "evm", "--mode", "test", evm_account_xpub()
    )
    watcher_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    services = [
        # Every relay is paused (the matcher's would publish the api's rows too): nothing the
        # api writes reaches Kafka yet.
        Service(
            "api",
            [_bin("pago-api"), "--host", "127.0.0.1", "--port", str(port)],
            {**env, "PAGO_RUN_OUTBOX_RELAY": "false"},
        ),
        Service("matcher", [_bin("pago-matcher")], {**env, "PAGO_MATCHER_RELAY": "false"}),
        Service(
            "watcher",
            [_bin("pago-watcher"), "--network", "ETHEREUM", "--mode", "test"],
            watcher_env,
        ),
    ]
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ) as api:

            async def healthy() -> int:
                try:
                    return (await api.get("/healthz")).status_code
                except httpx.TransportError:
                    return 0

            async def watcher_leads() -> bool:
                return services[2].find("leading: this replica scans now") is not None

            await _until(healthy, lambda code: code == 200, 60, services, kafka, anvil)
            await _until(watcher_leads, bool, 60, services, kafka, anvil)
            created = await api.post(
                "/v1/checkout/sessions",
                json={
                    "pricing_amount": "10",
                    "pricing_currency": "USDT",
                    "currency": "USDT",
                    "network": "ETHEREUM",
                    "client_reference_id": f"late-{run_id}",
                },
            )
            assert created.status_code == 201, created.text
            session = created.json()

            async def get() -> dict[str, Any]:
                response = await api.get(f"/v1/checkout/sessions/{session['id']}")
                assert response.status_code == 200, response.text
                data: dict[str, Any] = response.json()
                return data

            tx = await asyncio.to_thread(
                anvil.transfer, "USDT", 1, session["pay_address"], 10 * USDT
            )
            paid_in = anvil.web3.eth.get_transaction_receipt(tx)["blockNumber"]  # type: ignore[arg-type]
            await asyncio.to_thread(anvil.mine, OLD_WINDOW + 200)
            head = anvil.web3.eth.block_number
            status_url = f"http://127.0.0.1:{services[2].find('watcher started')['http_port']}"  # type: ignore[index]

            async def watcher_cursor() -> int:
                async with httpx.AsyncClient(base_url=status_url, timeout=5) as http:
                    cursor = (await http.get("/status")).json().get("cursor")
                return int(cursor) if cursor is not None else -1

            # The scan has passed the payment by more than the old window before the watcher
            # hears of the address.
            await _until(watcher_cursor, lambda c: c >= head - 2, 60, services, kafka, anvil)
            assert head - 2 - paid_in > OLD_WINDOW
            assert (await get())["status"] == "Pending"

            services.append(
                Service("relay", [_bin("python"), "-m", "pago.common.outbox"], env)
            )  # the relay resumes
            paid = await _until(get, lambda s: s["status"] == "Paid", 90, services, kafka, anvil)
    finally:
        for service in services:
            service.stop()

    assert [t["tx_hash"] for t in paid["transactions"]] == [tx]
    assert paid["amount_received"] == "10"
