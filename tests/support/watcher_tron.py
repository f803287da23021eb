"""What the TRON watcher's tests share: a chains file for the local node, TRON watch entries,
settings with test timings, the watcher as a process, and reading what reached the broker.

The watcher under test always runs for real (``create_app`` in-process, or ``pago-watcher
--network TRON`` as a subprocess) against a ``TronNode`` (``tests/support/tron_node``), a real
Kafka-protocol broker and a real Redis; nothing of the watcher is replaced.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pago.common.enums import Network
from pago.common.events import TransferObserved
from pago.watcher.settings import WatcherSettings
from tests.support.tron_node import TronChain, Tx, b58, key_of
from tests.support.watcher import by_stage, read_transfers
from tests.support.watcher import watch as watch_addresses

NETWORK = "TRON"
MODE = "test"
USDT_CONTRACT = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
"""The registry's USDT in TRON test mode (Nile); the local node's logs name it."""
USDT_KEY = key_of(USDT_CONTRACT)
USDT = 10**6
"""One 6-decimal USDT in base units."""
CONFIRMATIONS = 19
"""The registry's depth for TRON (not overridden here: the tests run at the real one)."""


def chains_file(path: Path, *urls: str, genesis: str, confirmations: int | None = None) -> Path:
    """A registry override pointing TRON test mode at local nodes (the token stays Nile's);
    ``genesis``: the local chain's block 0 id (the watcher refuses a node on another chain)."""
    lines = [f"[networks.{NETWORK}.test]", 'name = "local TRON node (tests)"']
    lines.append(f'genesis_hash = "{genesis}"')
    if confirmations is not None:
        lines.append(f"confirmations = {confirmations}")
    lines.append("rpc_urls = [" + ", ".join(repr(u) for u in urls) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


def new_chain(**options: Any) -> TronChain:
    return TronChain(tokens=[USDT_KEY], **options)


def new_addresses(n: int) -> list[str]:
    """Fresh deposit addresses (``T…``; watch-only, nobody holds their keys)."""
    return [b58(secrets.token_bytes(20)) for _ in range(n)]


def tron_settings(bootstrap: str, redis_url: str, chains: Path, **over: object) -> WatcherSettings:
    values: dict[str, object] = {
        "network": NETWORK,
        "mode": MODE,
        "kafka_bootstrap_servers": bootstrap,
        "redis_url": redis_url,
        "chains_file": str(chains),
        "env": "test",
        "http_port": 0,
        "poll_interval": 0.1,
        "cursor_interval": 0.0,
        "lease_ttl": 3.0,
        "lease_renew": 0.5,
        "lease_retry": 0.3,
        "rpc_timeout": 3.0,
        "rpc_backoff_max": 0.5,
        "shutdown_timeout": 10.0,
        **over,
    }
    return WatcherSettings.model_validate(values)


async def watch(
    bootstrap: str,
    addresses: Iterable[str],
    *,
    until: datetime | None = None,
    created_at: datetime | None = None,
) -> None:
    """Publish ``WatchAddress`` for each TRON address, as the api's outbox does."""
    await watch_addresses(
        bootstrap,
        addresses,
        until=until,
        created_at=created_at,
        network=Network.TRON,
        session_of=lambda address: f"cs_{address[1:11].lower()}",
    )


async def pay_each_until_confirmed(
    chain: TronChain, bootstrap: str, addresses: Sequence[str]
) -> tuple[list[Tx], list[TransferObserved]]:
    """Pay each of ``addresses`` USDT (the n-th ``n`` USDT), mine the confirmations, and read
    ``chain.transfers`` until that many are confirmed: the payments and what was read."""
    txs = [
        chain.trc20_transfer(USDT_KEY, key_of(a), (i + 1) * USDT) for i, a in enumerate(addresses)
    ]
    chain.mine(CONFIRMATIONS + 1)
    seen = await read_transfers(bootstrap, lambda f: len(by_stage(f)["confirmed"]) >= len(txs))
    return txs, seen


def stages_of(transfers: Iterable[TransferObserved], txid: str) -> list[str]:
    return [t.stage.value for t in transfers if t.tx_hash == txid]
