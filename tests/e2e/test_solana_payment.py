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
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.surfpool import Surfpool
from tests.integration.watcher_solana.support import TOKEN, chains_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

POOL_SIZE = 3


class Service:
    """One service process; its output lines are kept (and shown when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.logs: list[str] = []
        self.proc = subprocess.Popen(
            argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)  # a full pipe freezes
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.logs.append(line.rstrip())

    def logged(self, message: str) -> bool:
        return any(f'"msg": "{message}"' in line for line in self.logs)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.logs[-25:])


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _admin(env: Mapping[str, str], *args: str) -> str:
    result = subprocess.run(
        [_bin("pago-admin"), *args], env=dict(env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"pago-admin {' '.join(args)}: {result.stderr}"
    return result.stdout


async def _until(
    probe: Callable[[], Awaitable[Any]],
    ok: Callable[[Any], bool],
    timeout: float,
    services: list[Service],
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if ok(last):
            return last
        for service in services:
            assert service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"
        await asyncio.sleep(0.2)
    logs = "\n".join(s.tail() for s in services)
    raise AssertionError(f"timed out; last: {json.dumps(last, indent=1)[:3000]}\n{logs}")


@pytest.fixture
def surfpool(tmp_path: Path) -> Iterator[Surfpool]:
    with Surfpool.start(tmp_path / "surfpool") as node:
        yield node


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    """This test's own broker: its watcher's cursor and the matcher's group start clean."""
    server = KafkaServer.start(env={})
    try:
        yield server
    finally:
        server.close()


async def test_a_solana_session_goes_underpaid_then_paid_through_surfpool(
    server_env: dict[str, str],
    db: AsyncEngine,
    surfpool: Surfpool,
    broker: KafkaServer,
    tmp_path: Path,
    run_id: str,
) -> None:
    port = free_tcp_port()
    env = {
        **server_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PAGO_CHAINS_FILE": str(chains_file(tmp_path / "chains.toml", surfpool)),
        "PAGO_CHECKOUT_BASE_URL": f"http://127.0.0.1:{port}/checkout/",
        "PAGO_LOG_LEVEL": "INFO",
        "PAGO_MATCHER_HTTP_PORT": "0",
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_WATCHER_HTTP_PORT": "0",
        "PAGO_WATCHER_POLL_INTERVAL": "0.2",
    }
    env.pop("PAGO_AML_LIST_PATH", None)  # screening is tested on its own
    merchant = f"mch_sol_{run_id}"
    _admin(env, "--json", "merchant", "create", "--id", merchant, "--name", "Solana Shop")
    key = str(json.loads(_admin(env, "--json", "key", "create", merchant, "--mode", "test"))["key"])
    # Watch-only: the merchant keeps the keys; Pago gets the owner pubkeys.
    pool = [str(Keypair().pubkey()) for _ in range(POOL_SIZE)]
    addresses = tmp_path / "owners.txt"
    addresses.write_text("# owner pubkeys\n" + "\n".join(pool) + "\n")
    imported = json.loads(
        _admin(
            env,
            "--json",
            "pool",
            "import",
            merchant,
            "--family",
            "solana",
            "--mode",
            "test",
            str(addresses),
        )
    )
    assert imported["added"] == POOL_SIZE

    watcher_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}  # it never needs one
    services = [
        Service("api", [_bin("pago-api"), "--host", "127.0.0.1", "--port", str(port)], env),
        Service("matcher", [_bin("pago-matcher")], env),
        Service(
            "watcher",
            [_bin("pago-watcher"), "--network", "SOLANA", "--mode", "test"],
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

            await _until(healthy, lambda code: code == 200, 60, services)
            created = await api.post(
                "/v1/checkout/sessions",
                json={
                    "pricing_amount": "10",
                    "pricing_currency": "USDT",
                    "currency": "USDT",
                    "network": "SOLANA",
                    "client_reference_id": f"order-{run_id}",
                },
            )
            assert created.status_code == 201, created.text
            session = created.json()
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            assert (session["network"], session["chain_family"]) == ("SOLANA", "solana")
            assert session["currency_contract"] == surfpool.mints["USDT"]
            pay_to = session["pay_address"]
            assert pay_to in pool, "an owner pubkey from the imported pool"
            ata = surfpool.associated_token_address("USDT", pay_to)
            assert surfpool.token_balance("USDT", pay_to) == 0, f"{ata} does not exist yet"

            async def get() -> dict[str, Any]:
                response = await api.get(f"/v1/checkout/sessions/{session['id']}")
                assert response.status_code == 200, response.text
                data: dict[str, Any] = response.json()
                return data

            async def watcher_leads() -> bool:
                return services[2].logged("leading: this replica scans now")

            await _until(watcher_leads, bool, 60, services)

            first = await asyncio.to_thread(surfpool.transfer, "USDT", pay_to, 4 * TOKEN)
            underpaid = await _until(get, lambda s: s["status"] == "Underpaid", 60, services)
            assert underpaid["amount_received"] == "4"

            second = await asyncio.to_thread(surfpool.transfer, "USDT", pay_to, 6 * TOKEN)
            paid = await _until(get, lambda s: s["status"] == "Paid", 60, services)
    finally:
        codes = {s.name: s.stop() for s in services}

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first, second}, "tx_hash is the base58 signature"
    assert transactions[second]["amount"] == "6"
    assert surfpool.payer is not None
    assert transactions[second]["from_address"] == str(surfpool.payer.pubkey())
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert all(t["network"] == "SOLANA" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
