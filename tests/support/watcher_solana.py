"""What the SOLANA watcher's tests share: a chains file for Surfpool, watchlist entries, deposit
owners, transfers sent the way wallets send them, and the watcher as a real process.

Everything runs for real: Surfpool (a Solana JSON-RPC simnet with SPL Token mints), the watcher
(``create_app`` in-process, or ``pago-watcher`` as a subprocess), a Kafka-protocol broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    transfer_checked,
)
from spl.token.models import TransferCheckedParams

from pago.common.events import WatchAddress
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key
from pago.devstack.surfpool import Surfpool
from pago.watcher.settings import WatcherSettings
from tests.support.processes import WatcherProcess

NETWORK = "SOLANA"
MODE = "test"
TOKEN = 10**6
"""One 6-decimal test token in base units."""


def chains_file(
    path: Path, surfpool: Surfpool, *, rpc_urls: Sequence[str] = (), genesis: str | None = None
) -> Path:
    """A registry override mapping SOLANA test mode onto ``surfpool`` (as ``pago-dev up`` does);
    ``genesis``: another genesis hash than the simnet's (a misconfiguration)."""
    urls = list(rpc_urls) or [surfpool.rpc_url]
    lines = [f"[networks.{NETWORK}.test]", 'name = "Surfpool (tests)"', f"rpc_urls = {urls!r}"]
    lines.append(f'genesis_hash = "{genesis or surfpool.genesis_hash}"')
    for symbol, mint in surfpool.mints.items():
        lines += [f"[networks.{NETWORK}.test.tokens.{symbol}]", f'contract = "{mint}"']
        lines += ["decimals = 6"]
    path.write_text("\n".join(lines) + "\n")
    return path


def solana_settings(
    bootstrap: str, redis_url: str, chains: Path, **over: object
) -> WatcherSettings:
    """Fast test timings and no budget; anything else as production has it (confirmed at
    ``finalized``, from the registry's commitment)."""
    values: dict[str, object] = {
        "network": NETWORK,
        "mode": MODE,
        "kafka_bootstrap_servers": bootstrap,
        "redis_url": redis_url,
        "chains_file": str(chains),
        "env": "test",
        "http_port": 0,
        "leadership": "none",
        "poll_interval": 0.1,
        "cursor_interval": 0.0,
        "rpc_timeout": 5.0,
        "rpc_backoff_max": 1.0,
        "shutdown_timeout": 10.0,
        "solana_rpc_budget": 0,
        **over,
    }
    return WatcherSettings.model_validate(values)


def owners(n: int) -> list[Keypair]:
    """Fresh deposit owners. The tests keep the keys only to spend from them (a merchant's
    sweeper); the watcher never has them."""
    return [Keypair() for _ in range(n)]


async def watch(bootstrap: str, addresses: Iterable[str], *, until: datetime | None = None) -> None:
    """Publish ``WatchAddress`` for each owner pubkey, as the api's outbox does."""
    producer = create_producer(bootstrap, client_id="watcher-solana-tests")
    await producer.start()
    until = until or datetime.now(UTC) + timedelta(hours=2)
    try:
        acks = []
        for address in addresses:
            event = WatchAddress(
                network=NETWORK,
                mode=MODE,
                address=address,
                session_id=f"cs_{address[:10]}",
                watch_until=until,
            )
            key = watchlist_key(NETWORK, MODE, address).encode()
            acks.append(await producer.send(CHAIN_WATCHLIST, event.to_bytes(), key=key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def pay(surfpool: Surfpool, symbol: str, owner: Keypair | Pubkey | str, units: int) -> str:
    """``transfer_checked`` from the funded payer, creating the owner's ATA in the same
    transaction (a fresh owner needs no setup); returns once confirmed."""
    return await asyncio.to_thread(surfpool.transfer, symbol, _pubkey(owner), units)


async def pay_fast(
    surfpool: Surfpool, payments: Sequence[tuple[str, Keypair | Pubkey | str, int]]
) -> list[str]:
    """Send ``payments`` back to back without waiting for each, then wait for all of them."""

    def send() -> list[str]:
        sigs = [surfpool.transfer(s, _pubkey(o), u, wait=False) for s, o, u in payments]
        for sig in sigs:
            wait_confirmed(surfpool, sig)
        return sigs

    return await asyncio.to_thread(send)


def wait_confirmed(surfpool: Surfpool, signature: str, timeout: float = 20.0) -> int:
    """Poll until ``signature`` is confirmed; its slot."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.post(
            surfpool.rpc_url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "getSignatureStatuses",
                "params": [[signature], {"searchTransactionHistory": True}],
            },
            timeout=5,
        ).json()
        status = answer["result"]["value"][0]
        if status is not None and status.get("confirmationStatus") in ("confirmed", "finalized"):
            assert status["err"] is None, status
            return int(status["slot"])
        time.sleep(0.02)
    raise AssertionError(f"{signature} not confirmed within {timeout} s")


async def send(surfpool: Surfpool, instructions: Sequence[Instruction], *signers: Keypair) -> str:
    """A transaction of ``instructions``, the devstack's payer paying the fee; once confirmed."""
    payer = surfpool.payer
    assert payer is not None
    async with AsyncClient(surfpool.rpc_url, commitment=Confirmed) as client:
        blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
        tx = Transaction.new_signed_with_payer(
            list(instructions), payer.pubkey(), [payer, *signers], blockhash
        )
        sent = await client.send_raw_transaction(
            bytes(tx), opts=TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
        )
    signature = str(sent.value)
    await asyncio.to_thread(wait_confirmed, surfpool, signature)
    return signature


def transfer_ix(
    surfpool: Surfpool, symbol: str, source_owner: Pubkey, dest_owner: Pubkey, units: int
) -> Instruction:
    """``transfer_checked`` between two owners' ATAs of ``symbol``'s mint."""
    mint = surfpool.mint_pubkey(symbol)
    program = surfpool.token_program(symbol)
    return transfer_checked(
        TransferCheckedParams(
            program_id=program,
            source=get_associated_token_address(source_owner, mint, program),
            mint=mint,
            dest=get_associated_token_address(dest_owner, mint, program),
            owner=source_owner,
            amount=units,
            decimals=6,
        )
    )


def create_ata_ix(surfpool: Surfpool, symbol: str, owner: Pubkey) -> Instruction:
    payer = surfpool.payer
    assert payer is not None
    return create_idempotent_associated_token_account(
        payer.pubkey(), owner, surfpool.mint_pubkey(symbol), surfpool.token_program(symbol)
    )


def rpc(surfpool: Surfpool, method: str, params: list[Any]) -> Any:
    import httpx

    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = httpx.post(surfpool.rpc_url, json=body, timeout=10).json()
    assert "error" not in answer, answer
    return answer["result"]


def finalized_slot(surfpool: Surfpool) -> int:
    return int(rpc(surfpool, "getSlot", [{"commitment": "finalized"}]))


def confirmed_slot(surfpool: Surfpool) -> int:
    return int(rpc(surfpool, "getSlot", [{"commitment": "confirmed"}]))


def _pubkey(owner: Keypair | Pubkey | str) -> Pubkey:
    if isinstance(owner, Keypair):
        return owner.pubkey()
    return owner if isinstance(owner, Pubkey) else Pubkey.from_string(owner)


class SolanaWatcherProcess(WatcherProcess):
    """``pago-watcher --network SOLANA --mode test``: no leader election, no RPC budget."""

    def __init__(self, kafka: str, redis_url: str, chains: Path, **settings: str) -> None:
        solana = {"PAGO_WATCHER_LEADERSHIP": "none", "PAGO_WATCHER_SOLANA_RPC_BUDGET": "0"}
        super().__init__(kafka, redis_url, chains, network=NETWORK, mode=MODE, **solana | settings)
