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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from tests.e2e.support import (
    TEST_MNEMONIC,
    api_client,
    create_session,
    pipeline_env,
    register_xpub,
    seed_merchant,
    start_pipeline,
    wait_for_status,
)
from tests.support.tron_node import TronChain, TronNode, b58, key_of
from tests.support.tron_node.server import produce
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    USDT,
    USDT_KEY,
    chains_file,
    new_chain,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

BLOCK_SECONDS = 0.1
"""The node's block time here (TRON's is 3 s; the watcher only counts blocks)."""


def tron_account(mnemonic: str = TEST_MNEMONIC) -> Bip44:
    """The account node ``m/44'/195'/0'`` (the api derives ``…/0/i`` from its xpub)."""
    seed = Bip39SeedGenerator(mnemonic).Generate()
    return Bip44.FromSeed(seed, Bip44Coins.TRON).Purpose().Coin().Account(0)


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
    env = pipeline_env(
        server_env,
        kafka=broker.bootstrap_servers,
        chains=chains_file(tmp_path / "chains.toml", node.url, genesis=chain.blocks[0].id),
        port=port,
    )
    merchant = f"mch_tron_{run_id}"
    account = tron_account()
    key = seed_merchant(env, merchant, "TRON Shop")
    register_xpub(env, merchant, "tron", str(account.PublicKey().ToExtended()))

    pipeline = start_pipeline(env, port=port, network="TRON")
    try:
        async with api_client(f"http://127.0.0.1:{port}", pipeline, key) as api:
            session = await create_session(api, "TRON", f"order-{run_id}")
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            assert (session["chain_family"], session["network"]) == ("tron", "TRON")
            pay_to = session["pay_address"]
            first_child = account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(0)
            assert pay_to == first_child.PublicKey().ToAddress(), "m/44'/195'/0'/0/0"
            await pipeline.watcher_leads()

            customer = chain.stranger()
            first = chain.trc20_transfer(USDT_KEY, key_of(pay_to), 4 * USDT, sender=customer)
            paid_in = chain.head.number + 1
            underpaid = await wait_for_status(pipeline, api, session["id"], "Underpaid")
            assert underpaid["amount_received"] == "4"
            assert chain.head.number >= paid_in + CONFIRMATIONS, "credited only when confirmed"

            second = chain.trc20_transfer(USDT_KEY, key_of(pay_to), 6 * USDT, sender=customer)
            paid = await wait_for_status(pipeline, api, session["id"], "Paid")
    finally:
        codes = pipeline.stop()

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first.txid, second.txid}
    assert transactions[second.txid]["amount"] == "6"
    assert transactions[second.txid]["from_address"] == b58(customer)
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert all(t["network"] == "TRON" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
