"""Zero-value and dust transfers on a local EVM chain cannot grief a session (issue 11, item 1).

ERC-20 ``transferFrom(from, to, 0)`` succeeds with no allowance (OpenZeppelin's ERC20 checks
``allowance < value`` and the sender's ``balance < value``, both false for 0) and emits
``Transfer(from, to, 0)`` naming any address as the sender. Here a funded account names an
address from the real OFAC list (the matcher reads ``/work/shared/data/aml``), and another sends
1 base unit: the session stays ``Pending`` with its ``expires_at``, no event is published for
either, both are recorded in ``ignored_transfers``, and the real payment afterwards makes it
``Paid``, never ``Blocked``. Watcher → ``chain.transfers`` → matcher → Postgres → api, all real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import ignored_transfers
from pago.common.events import SESSION_EVENT_ADAPTER
from pago.common.topics import CHECKOUT_SESSIONS
from pago.devstack.anvil import Anvil
from tests.e2e.support import (
    api_client,
    create_session,
    get_session,
    screening,
    seed_evm_merchant,
    start_pipeline,
    wait_for_session,
)
from tests.support.kafka import read_topic
from tests.support.matcher import aml_dir
from tests.support.watcher import USDT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def ofac_evm_address() -> str:
    """The first EVM address of the real OFAC snapshot (never copied into the repository)."""
    for line in (aml_dir() / "ofac_sdn_ETH.txt").read_text().splitlines():
        if line.strip().startswith("0x") and len(line.strip()) == 42:
            return line.strip()
    pytest.fail("no EVM address in ofac_sdn_ETH.txt")


def transfer_from(anvil: Anvil, payer_index: int, owner: str, to: str, amount: int) -> str:
    """``transferFrom(owner, to, amount)`` signed by payer ``payer_index`` (no allowance)."""
    w3 = anvil.web3
    address, key = anvil.payers[payer_index]
    call = anvil.token("USDT").functions.transferFrom(
        w3.to_checksum_address(owner), w3.to_checksum_address(to), amount
    )
    nonce = w3.eth.get_transaction_count(w3.to_checksum_address(address), "pending")
    tx = call.build_transaction(
        {"from": w3.to_checksum_address(address), "nonce": nonce, "chainId": anvil.chain_id}
    )
    signed = w3.eth.account.sign_transaction(tx, key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
    assert receipt["status"] == 1, "transferFrom(any, to, 0) must succeed with no allowance"
    assert len(receipt["logs"]) == 1, "and emit its Transfer event"
    return str(tx_hash.to_0x_hex())


async def test_zero_value_from_an_ofac_address_and_dust_never_move_the_session(
    evm_env: dict[str, str], api_port: int, db: AsyncEngine, anvil: Anvil, run_id: str
) -> None:
    env = screening(evm_env, aml_dir())  # the real OFAC snapshot, level 1 on
    sanctioned = ofac_evm_address()
    key = seed_evm_merchant(env, f"mch_dust_{run_id}", "Dust Shop")
    pipeline = start_pipeline(env, port=api_port, network="ETHEREUM", anvil=anvil)
    try:
        async with api_client(f"http://127.0.0.1:{api_port}", pipeline, key) as api:
            session = await create_session(api, "ETHEREUM", f"order-{run_id}")
            pay_to = session["pay_address"]

            async def ignored() -> list[dict[str, Any]]:
                async with db.connect() as conn:
                    result = await conn.execute(
                        select(ignored_transfers).where(
                            ignored_transfers.c.session_id == session["id"]
                        )
                    )
                    return [dict(r) for r in result.mappings()]

            await pipeline.watcher_leads()

            # A third party (payer 3) names a sanctioned sender; payer 1 sends 1 base unit.
            griefing = await asyncio.to_thread(transfer_from, anvil, 3, sanctioned, pay_to, 0)
            dust = await asyncio.to_thread(anvil.transfer, "USDT", 1, pay_to, 1)
            await asyncio.to_thread(anvil.mine, 3)
            rows = await pipeline.until(ignored, lambda r: len(r) == 2, 60)
            assert {(r["tx_hash"], int(r["amount_raw"])) for r in rows} == {
                (griefing.lower(), 0),
                (dust.lower(), 1),
            }
            assert {r["reason"] for r in rows} == {"below_min_credit"}
            untouched = await get_session(api, session["id"])
            assert (untouched["status"], untouched["amount_received"]) == ("Pending", "0")
            assert untouched["expires_at"] == session["expires_at"]
            assert untouched["transactions"] == []

            payment = await asyncio.to_thread(anvil.transfer, "USDT", 2, pay_to, 10 * USDT)
            await asyncio.to_thread(anvil.mine, 3)
            paid = await wait_for_session(
                pipeline, api, session["id"], lambda s: s["status"] != "Pending"
            )
    finally:
        pipeline.stop()

    assert paid["status"] == "Paid"
    assert [t["tx_hash"] for t in paid["transactions"]] == [payment]
    records = await read_topic(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        CHECKOUT_SESSIONS,
        key_prefix=session["id"],
        until=lambda recs: any(b'"status":"Paid"' in (r.value or b"") for r in recs),
    )
    events = [SESSION_EVENT_ADAPTER.validate_json(r.value or b"") for r in records]
    # Nothing for the zero-value transfer or the dust: every event after the api's
    # session.created is about the real payment (an event they caused would list no transfer).
    assert all(
        e.type == "session.created" or any(t.tx_hash == payment for t in e.session.transactions)
        for e in events
    )
    assert not any(e.session.status.value == "Blocked" for e in events)
