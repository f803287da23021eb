"""A real payment on a local EVM chain, end to end: api, matcher and watcher as processes.

The merchant is seeded with ``pago-admin`` as an operator would (an account xpub derived from
the BIP39 test mnemonic), a session is created through the API, the customer pays with real
ERC-20 transfers on anvil (first too little, then the rest), and GET shows the session
Underpaid, then Paid with both transaction hashes. Nothing in between is faked: watcher →
``chain.transfers`` → matcher → Postgres → api.
"""

from __future__ import annotations

import asyncio

import pytest

from pago.devstack.anvil import Anvil
from tests.e2e.support import (
    api_client,
    create_session,
    seed_evm_merchant,
    start_pipeline,
    wait_for_status,
)
from tests.support.watcher import USDT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


async def test_a_session_goes_underpaid_then_paid_through_the_local_chain(
    evm_env: dict[str, str], api_port: int, anvil: Anvil, run_id: str
) -> None:
    # The matcher without an AML list or provider (screening is tested on its own).
    key = seed_evm_merchant(evm_env, f"mch_e2e_{run_id}", "E2E Shop")
    pipeline = start_pipeline(evm_env, port=api_port, network="ETHEREUM", anvil=anvil)
    try:
        async with api_client(f"http://127.0.0.1:{api_port}", pipeline, key) as api:
            session = await create_session(api, "ETHEREUM", f"order-{run_id}")
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            pay_to = session["pay_address"]
            await pipeline.watcher_leads()

            first = await asyncio.to_thread(anvil.transfer, "USDT", 1, pay_to, 4 * USDT)
            await asyncio.to_thread(anvil.mine, 3)
            underpaid = await wait_for_status(pipeline, api, session["id"], "Underpaid")
            assert underpaid["amount_received"] == "4"

            second = await asyncio.to_thread(anvil.transfer, "USDT", 2, pay_to, 6 * USDT)
            await asyncio.to_thread(anvil.mine, 3)
            paid = await wait_for_status(pipeline, api, session["id"], "Paid")
    finally:
        codes = pipeline.stop()

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first, second}
    assert transactions[second]["amount"] == "6"
    assert transactions[second]["from_address"] == anvil.payers[2][0]
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
