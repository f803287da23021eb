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

import httpx
import pytest

from pago.devstack.anvil import Anvil
from tests.e2e.support import (
    api_client,
    bin_path,
    create_session,
    get_session,
    seed_evm_merchant,
    start_pipeline,
    wait_for_status,
)
from tests.support.processes import ServiceProcess
from tests.support.watcher import USDT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OLD_WINDOW = 1000
"""The watcher's fixed back-fill before issue 11 (``PAGO_WATCHER_BACKFILL_BLOCKS``)."""


async def test_a_payment_made_while_the_relay_stalled_credits_after_the_old_window(
    evm_env: dict[str, str], api_port: int, anvil: Anvil, run_id: str
) -> None:
    key = seed_evm_merchant(evm_env, f"mch_late_{run_id}", "Late Shop")
    # Every relay is paused (the matcher's would publish the api's rows too): nothing the api
    # writes reaches Kafka yet.
    pipeline = start_pipeline(
        evm_env,
        port=api_port,
        network="ETHEREUM",
        api_env={"PAGO_RUN_OUTBOX_RELAY": "false"},
        matcher_env={"PAGO_MATCHER_RELAY": "false"},
        anvil=anvil,
    )
    try:
        async with api_client(f"http://127.0.0.1:{api_port}", pipeline, key) as api:
            await pipeline.watcher_leads()
            session = await create_session(api, "ETHEREUM", f"late-{run_id}")

            tx = await asyncio.to_thread(
                anvil.transfer, "USDT", 1, session["pay_address"], 10 * USDT
            )
            paid_in = anvil.web3.eth.get_transaction_receipt(tx)["blockNumber"]  # type: ignore[arg-type]
            await asyncio.to_thread(anvil.mine, OLD_WINDOW + 200)
            head = anvil.web3.eth.block_number
            started = pipeline.service("watcher").find("watcher started")
            status_url = f"http://127.0.0.1:{started['http_port']}"  # type: ignore[index]

            async def watcher_cursor() -> int:
                async with httpx.AsyncClient(base_url=status_url, timeout=5) as http:
                    cursor = (await http.get("/status")).json().get("cursor")
                return int(cursor) if cursor is not None else -1

            # The scan has passed the payment by more than the old window before the watcher
            # hears of the address.
            await pipeline.until(watcher_cursor, lambda c: c >= head - 2, 60)
            assert head - 2 - paid_in > OLD_WINDOW
            assert (await get_session(api, session["id"]))["status"] == "Pending"

            pipeline.services.append(
                ServiceProcess("relay", [bin_path("python"), "-m", "pago.common.outbox"], evm_env)
            )  # the relay resumes
            paid = await wait_for_status(pipeline, api, session["id"], "Paid", timeout=90)
    finally:
        pipeline.stop()

    assert [t["tx_hash"] for t in paid["transactions"]] == [tx]
    assert paid["amount_received"] == "10"
