"""A real payment on Surfpool, end to end: api, matcher and the SOLANA watcher as processes.

The merchant is seeded with ``pago-admin`` as an operator would, importing a pool of owner
pubkeys it generated (Solana deposit addresses cannot derive from an xpub); a SOLANA session is
created through the API, the customer pays with real SPL ``transfer_checked`` transactions
(first too little, then the rest; the first one also creates the deposit owner's ATA), and GET
shows the session Underpaid, then Paid once each payment is finalized. Nothing in between is
faked: Surfpool → watcher → ``chain.transfers`` → matcher → Postgres → api.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from solders.keypair import Keypair
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.surfpool import Surfpool
from tests.e2e.support import (
    api_client,
    create_session,
    import_pool,
    pipeline_env,
    seed_merchant,
    start_pipeline,
    wait_for_status,
)
from tests.support.watcher_solana import TOKEN, chains_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

POOL_SIZE = 3


@pytest.fixture
def surfpool(tmp_path: Path) -> Iterator[Surfpool]:
    with Surfpool.start(tmp_path / "surfpool") as node:
        yield node


async def test_a_solana_session_goes_underpaid_then_paid_through_surfpool(
    server_env: dict[str, str],
    db: AsyncEngine,
    surfpool: Surfpool,
    broker: KafkaServer,
    tmp_path: Path,
    run_id: str,
) -> None:
    port = free_tcp_port()
    env = pipeline_env(
        server_env,
        kafka=broker.bootstrap_servers,
        chains=chains_file(tmp_path / "chains.toml", surfpool),
        port=port,
    )  # no AML list: screening is tested on its own
    merchant = f"mch_sol_{run_id}"
    key = seed_merchant(env, merchant, "Solana Shop")
    # Watch-only: the merchant keeps the keys; Pago gets the owner pubkeys.
    pool = [str(Keypair().pubkey()) for _ in range(POOL_SIZE)]
    addresses = tmp_path / "owners.txt"
    addresses.write_text("# owner pubkeys\n" + "\n".join(pool) + "\n")
    assert import_pool(env, merchant, "solana", addresses) == POOL_SIZE

    pipeline = start_pipeline(env, port=port, network="SOLANA")
    try:
        async with api_client(f"http://127.0.0.1:{port}", pipeline, key) as api:
            session = await create_session(api, "SOLANA", f"order-{run_id}")
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            assert (session["network"], session["chain_family"]) == ("SOLANA", "solana")
            assert session["currency_contract"] == surfpool.mints["USDT"]
            pay_to = session["pay_address"]
            assert pay_to in pool, "an owner pubkey from the imported pool"
            ata = surfpool.associated_token_address("USDT", pay_to)
            assert surfpool.token_balance("USDT", pay_to) == 0, f"{ata} does not exist yet"
            await pipeline.watcher_leads()

            first = await asyncio.to_thread(surfpool.transfer, "USDT", pay_to, 4 * TOKEN)
            underpaid = await wait_for_status(pipeline, api, session["id"], "Underpaid")
            assert underpaid["amount_received"] == "4"

            second = await asyncio.to_thread(surfpool.transfer, "USDT", pay_to, 6 * TOKEN)
            paid = await wait_for_status(pipeline, api, session["id"], "Paid")
    finally:
        codes = pipeline.stop()

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first, second}, "tx_hash is the base58 signature"
    assert transactions[second]["amount"] == "6"
    assert surfpool.payer is not None
    assert transactions[second]["from_address"] == str(surfpool.payer.pubkey())
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert all(t["network"] == "SOLANA" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
