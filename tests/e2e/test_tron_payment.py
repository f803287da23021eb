"""A real TRON payment, end to end: api, matcher and the TRON watcher as processes, against the
local TRON node producing a block every 0.1 s.

The merchant is seeded with ``pago-admin`` as an operator would (an account xpub ``m/44'/195'/0'``
derived from the BIP39 test mnemonic), a TRON session is created through the API, the customer
pays USDT (TRC-20) to its ``T…`` address — first too little, then the rest — and GET shows it
Underpaid, then Paid with both txIDs, each credited only after 19 blocks. Nothing in between is
faked: node → watcher → ``chain.transfers`` → matcher → Postgres → api.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from tests.e2e.test_evm_payment import TEST_MNEMONIC, Service, _admin, _bin, _until
from tests.integration.watcher_tron.support import (
    CONFIRMATIONS,
    USDT,
    USDT_KEY,
    chains_file,
    new_chain,
)
from tests.support.tron_node import TronChain, TronNode, b58, key_of
from tests.support.tron_node.server import produce

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

BLOCK_SECONDS = 0.1
"""The node's block time here (TRON's is 3 s; the watcher only counts blocks)."""


def tron_account(mnemonic: str = TEST_MNEMONIC) -> Bip44:
    """The account node ``m/44'/195'/0'`` (the api derives ``…/0/i`` from its xpub)."""
    seed = Bip39SeedGenerator(mnemonic).Generate()
    return Bip44.FromSeed(seed, Bip44Coins.TRON).Purpose().Coin().Account(0)


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    """This test's own broker: its watcher's cursor and the matcher's group start clean."""
    server = KafkaServer.start(env={})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def live_chain() -> AsyncIterator[tuple[TronChain, TronNode]]:
    chain = new_chain()
    chain.mine(40)
    stop = asyncio.Event()
    async with TronNode(chain) as node:
        miner = asyncio.create_task(produce(chain, BLOCK_SECONDS, stop))
        try:
            yield chain, node
        finally:
            stop.set()
            await miner


async def test_a_tron_session_goes_underpaid_then_paid(
    server_env: dict[str, str],
    db: AsyncEngine,
    live_chain: tuple[TronChain, TronNode],
    broker: KafkaServer,
    tmp_path: Path,
    run_id: str,
) -> None:
    chain, node = live_chain
    port = free_tcp_port()
    env = {
        **server_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PAGO_CHAINS_FILE": str(
            chains_file(tmp_path / "chains.toml", node.url, genesis=chain.blocks[0].id)
        ),
        "PAGO_CHECKOUT_BASE_URL": f"http://127.0.0.1:{port}/checkout/",
        "PAGO_LOG_LEVEL": "INFO",
        "PAGO_MATCHER_HTTP_PORT": "0",
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_WATCHER_HTTP_PORT": "0",
        "PAGO_WATCHER_POLL_INTERVAL": "0.2",
    }
    env.pop("PAGO_AML_LIST_PATH", None)
    merchant = f"mch_tron_{run_id}"
    account = tron_account()
    _admin(env, "--json", "merchant", "create", "--id", merchant, "--name", "TRON Shop")
    key = str(json.loads(_admin(env, "--json", "key", "create", merchant, "--mode", "test"))["key"])
    xpub = str(account.PublicKey().ToExtended())
    _admin(env, "xpub", "register", merchant, "--family", "tron", "--mode", "test", xpub)

    watcher_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}  # it never needs one
    services = [
        Service("api", [_bin("pago-api"), "--host", "127.0.0.1", "--port", str(port)], env),
        Service("matcher", [_bin("pago-matcher")], env),
        Service(
            "watcher", [_bin("pago-watcher"), "--network", "TRON", "--mode", "test"], watcher_env
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

            await _until(healthy, lambda code: code == 200, 60, services)
            created = await api.post(
                "/v1/checkout/sessions",
                json={
                    "pricing_amount": "10",
                    "pricing_currency": "USDT",
                    "currency": "USDT",
                    "network": "TRON",
                    "client_reference_id": f"order-{run_id}",
                },
            )
            assert created.status_code == 201, created.text
            session = created.json()
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            assert (session["chain_family"], session["network"]) == ("tron", "TRON")
            pay_to = session["pay_address"]
            first_child = account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(0)
            assert pay_to == first_child.PublicKey().ToAddress(), "m/44'/195'/0'/0/0"

            async def get() -> dict[str, Any]:
                response = await api.get(f"/v1/checkout/sessions/{session['id']}")
                assert response.status_code == 200, response.text
                data: dict[str, Any] = response.json()
                return data

            async def watcher_leads() -> bool:
                return services[2].find("leading: this replica scans now") is not None

            await _until(watcher_leads, bool, 60, services)

            customer = chain.stranger()
            first = chain.trc20_transfer(USDT_KEY, key_of(pay_to), 4 * USDT, sender=customer)
            paid_in = chain.head.number + 1
            underpaid = await _until(get, lambda s: s["status"] == "Underpaid", 60, services)
            assert underpaid["amount_received"] == "4"
            assert chain.head.number >= paid_in + CONFIRMATIONS, "credited only when confirmed"

            second = chain.trc20_transfer(USDT_KEY, key_of(pay_to), 6 * USDT, sender=customer)
            paid = await _until(get, lambda s: s["status"] == "Paid", 60, services)
    finally:
        codes = {s.name: s.stop() for s in services}

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first.txid, second.txid}
    assert transactions[second.txid]["amount"] == "6"
    assert transactions[second.txid]["from_address"] == b58(customer)
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert all(t["network"] == "TRON" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
