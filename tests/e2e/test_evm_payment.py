"""A real payment on a local EVM chain, end to end: api, matcher and watcher as processes.

The merchant is seeded with ``pago-admin`` as an operator would (an account xpub derived from
the BIP39 test mnemonic), a session is created through the API, the customer pays with real
ERC-20 transfers on anvil (first too little, then the rest), and GET shows the session
Underpaid, then Paid with both transaction hashes. Nothing in between is faked: watcher →
``chain.transfers`` → matcher → Postgres → api.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Coins
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.topics import CHAIN_TRANSFERS
from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from tests.component.watcher.support import USDT, chains_file, read_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

TEST_MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
"""The BIP39 test-vector mnemonic (public on purpose: a dev wallet)."""


def evm_account_xpub(mnemonic: str = TEST_MNEMONIC) -> str:
    """The account-level xpub ``m/44'/60'/0'`` (the api derives ``…/0/i`` from it)."""
    seed = Bip39SeedGenerator(mnemonic).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    return str(account.PublicKey().ToExtended())


class Service:
    """One service process; its JSON log lines are kept (and shown when a test fails)."""

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

    def find(self, message: str) -> dict[str, Any] | None:
        for line in self.logs:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == message:
                return dict(entry)
        return None

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
    """Run ``pago-admin`` as an operator would; its stdout."""
    result = subprocess.run(
        [_bin("pago-admin"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"pago-admin {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    with Anvil.start(tmp_path / "anvil") as node:
        yield node


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    """This test's own broker: its watcher's cursor and the matcher's group start clean."""
    server = KafkaServer.start(env={})
    try:
        yield server
    finally:
        server.close()


async def _until(
    probe: Callable[[], Any],
    ok: Callable[[Any], bool],
    timeout: float,
    services: list[Service],
    kafka: str | None = None,
    anvil: Anvil | None = None,
) -> Any:
    """Poll ``probe`` until ``ok``; on timeout, fail with the services' logs (and, given the
    broker and the chain, the watcher's view of them)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if ok(last):
            return last
        for service in services:
            assert service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"
        await asyncio.sleep(0.2)
    if kafka is not None and anvil is not None:
        detail = await _diagnose(services, kafka, anvil)
    else:
        detail = "\n".join(f"--- {s.name}\n{s.tail()}" for s in services)
    raise AssertionError(f"timed out; last: {json.dumps(last, indent=1)[:2000]}\n{detail}")


async def _diagnose(services: list[Service], kafka: str, anvil: Anvil) -> str:
    """What a failure needs: each service's last lines, the watcher's own status, and what
    reached ``chain.transfers``."""
    parts = [s.tail() for s in services]
    head = await asyncio.to_thread(lambda: anvil.web3.eth.block_number)
    parts.append(f"--- anvil {anvil.rpc_url}: block {head} ---")
    started = next((s.find("watcher started") for s in services if s.name == "watcher"), None)
    if started is not None:
        url = f"http://127.0.0.1:{started['http_port']}/status"
        with contextlib.suppress(httpx.HTTPError):
            parts.append("--- watcher /status ---\n" + httpx.get(url, timeout=2).text)
    records = await read_all(kafka, CHAIN_TRANSFERS)
    parts.append(f"--- chain.transfers: {len(records)} records ---")
    parts += [r.value.decode()[:300] for r in records if r.value]
    return "\n".join(parts)


async def test_a_session_goes_underpaid_then_paid_through_the_local_chain(
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
        # The matcher without an AML list or provider (screening is tested on its own).
        "PAGO_MATCHER_HTTP_PORT": "0",
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_WATCHER_HTTP_PORT": "0",
        "PAGO_WATCHER_POLL_INTERVAL": "0.2",
    }
    env.pop("PAGO_AML_LIST_PATH", None)
    merchant = f"mch_e2e_{run_id}"
    _admin(env, "--json", "merchant", "create", "--id", merchant, "--name", "E2E Shop")
    key = str(json.loads(_admin(env, "--json", "key", "create", merchant, "--mode", "test"))["key"])
    _admin(
        env, "xpub", "register", merchant, "--family", "evm", "--mode", "test", evm_account_xpub()
    )

    watcher_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}  # it never needs one
    services = [
        Service("api", [_bin("pago-api"), "--host", "127.0.0.1", "--port", str(port)], env),
        Service("matcher", [_bin("pago-matcher")], env),
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

            await _until(healthy, lambda code: code == 200, 60, services, kafka, anvil)
            created = await api.post(
                "/v1/checkout/sessions",
                json={
                    "pricing_amount": "10",
                    "pricing_currency": "USDT",
                    "currency": "USDT",
                    "network": "ETHEREUM",
                    "client_reference_id": f"order-{run_id}",
                },
            )
            assert created.status_code == 201, created.text
            session = created.json()
            assert (session["status"], session["amount_expected"]) == ("Pending", "10")
            pay_to = session["pay_address"]

            async def get() -> dict[str, Any]:
                response = await api.get(f"/v1/checkout/sessions/{session['id']}")
                assert response.status_code == 200, response.text
                data: dict[str, Any] = response.json()
                return data

            async def watcher_leads() -> bool:
                return services[2].find("leading: this replica scans now") is not None

            await _until(watcher_leads, bool, 60, services, kafka, anvil)

            first = await asyncio.to_thread(anvil.transfer, "USDT", 1, pay_to, 4 * USDT)
            await asyncio.to_thread(anvil.mine, 3)
            underpaid = await _until(
                get, lambda s: s["status"] == "Underpaid", 60, services, kafka, anvil
            )
            assert underpaid["amount_received"] == "4"

            second = await asyncio.to_thread(anvil.transfer, "USDT", 2, pay_to, 6 * USDT)
            await asyncio.to_thread(anvil.mine, 3)
            paid = await _until(get, lambda s: s["status"] == "Paid", 60, services, kafka, anvil)
    finally:
        codes = {s.name: s.stop() for s in services}

    assert paid["amount_received"] == "10"
    transactions = {t["tx_hash"]: t for t in paid["transactions"]}
    assert set(transactions) == {first, second}
    assert transactions[second]["amount"] == "6"
    assert transactions[second]["from_address"] == anvil.payers[2][0]
    assert all(t["status"] == "Confirmed" for t in transactions.values())
    assert codes["watcher"] == 0, "SIGTERM stops the watcher gracefully"
