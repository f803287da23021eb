"""The end-to-end harness every test in ``tests/e2e`` shares: service processes, seeding a merchant
through ``pago-admin``, the api/matcher/watcher pipeline, an api client that waits for health,
sessions created and polled through the API, and a headless chromium for the hosted page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Coins
from playwright.async_api import Browser, ViewportSize, async_playwright

from pago.common.topics import CHAIN_TRANSFERS
from pago.devstack._support import free_tcp_port
from pago.devstack.anvil import Anvil
from tests.support.processes import ServiceProcess
from tests.support.watcher import read_all

TEST_MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
"""The BIP39 test-vector mnemonic (public on purpose: a dev wallet)."""

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

WATCHER_LEADS = "leading: this replica scans now"

Session = dict[str, Any]


def evm_account_xpub(mnemonic: str = TEST_MNEMONIC) -> str:
    """The account-level xpub ``m/44'/60'/0'`` (the api derives ``…/0/i`` from it)."""
    seed = Bip39SeedGenerator(mnemonic).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    return str(account.PublicKey().ToExtended())


def bin_path(name: str) -> str:
    """An executable installed next to this interpreter (the services' entry points)."""
    return str(Path(sys.executable).parent / name)


def admin(env: Mapping[str, str], *args: str) -> str:
    """Run ``pago-admin`` as an operator would; its stdout."""
    result = subprocess.run(
        [bin_path("pago-admin"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"pago-admin {' '.join(args)}: {result.stderr}"
    return result.stdout


def seed_merchant(env: Mapping[str, str], merchant: str, name: str) -> str:
    """Create ``merchant`` with ``pago-admin`` and a test-mode API key for it; the key."""
    admin(env, "--json", "merchant", "create", "--id", merchant, "--name", name)
    return str(json.loads(admin(env, "--json", "key", "create", merchant, "--mode", "test"))["key"])


def register_xpub(env: Mapping[str, str], merchant: str, family: str, xpub: str) -> None:
    """Register the merchant's test-mode account xpub for ``family`` (addresses derive from it)."""
    admin(env, "xpub", "register", merchant, "--family", family, "--mode", "test", xpub)


def seed_evm_merchant(env: Mapping[str, str], merchant: str, name: str) -> str:
    """A merchant with a test key and the test mnemonic's EVM account xpub; the key."""
    key = seed_merchant(env, merchant, name)
    register_xpub(env, merchant, "evm", evm_account_xpub())
    return key


def import_pool(env: Mapping[str, str], merchant: str, family: str, addresses: Path) -> int:
    """Import a test-mode pool of deposit addresses from a file; how many were added."""
    args = ["pool", "import", merchant, "--family", family, "--mode", "test", str(addresses)]
    out = admin(env, "--json", *args)
    return int(json.loads(out)["added"])


def pipeline_env(
    server_env: Mapping[str, str],
    *,
    kafka: str,
    chains: Path,
    port: int,
) -> dict[str, str]:
    """The environment of api, matcher and watcher: this test's broker and chains, fast polling.

    The matcher gets no AML list (screening is tested on its own; see ``screening``)."""
    env = {
        **server_env,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "PAGO_CHAINS_FILE": str(chains),
        "PAGO_CHECKOUT_BASE_URL": f"http://127.0.0.1:{port}/checkout/",
        "PAGO_LOG_LEVEL": "INFO",
        "PAGO_MATCHER_HTTP_PORT": "0",
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_WATCHER_HTTP_PORT": "0",
        "PAGO_WATCHER_POLL_INTERVAL": "0.2",
    }
    env.pop("PAGO_AML_LIST_PATH", None)
    return env


def screening(env: Mapping[str, str], aml_list: Path) -> dict[str, str]:
    """``env`` with the matcher screening against the lists in ``aml_list`` (and no provider)."""
    screened = {**env, "PAGO_AML_LIST_PATH": str(aml_list)}
    screened.pop("PAGO_AML_PROVIDER_URL", None)
    return screened


@dataclass
class Pipeline:
    """Running service processes, and what a timeout report needs to explain itself."""

    services: list[ServiceProcess]
    kafka: str | None = None
    anvil: Anvil | None = None
    codes: dict[str, int | None] = field(default_factory=dict)

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> dict[str, int | None]:
        """Stop every service (SIGTERM first); their exit codes by name."""
        self.codes = {s.name: s.stop() for s in self.services}
        return self.codes

    async def until(
        self, probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float
    ) -> Any:
        """Poll ``probe`` until ``ok``; a service that exits, or a timeout, fails with the
        services' logs (and, given the broker and the chain, the watcher's view of them)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await probe()
            if ok(last):
                return last
            for service in self.services:
                assert service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"timed out; last: {json.dumps(last, indent=1)[:3000]}\n{await self.diagnose()}"
        )

    async def diagnose(self) -> str:
        """Each service's last lines; with a broker and anvil, the chain head, the watcher's own
        status, and what reached ``chain.transfers``."""
        parts = [s.tail() for s in self.services]
        if self.kafka is None or self.anvil is None:
            return "\n".join(parts)
        anvil = self.anvil
        head = await asyncio.to_thread(lambda: anvil.web3.eth.block_number)
        parts.append(f"--- anvil {anvil.rpc_url}: block {head} ---")
        started = next(
            (s.find("watcher started") for s in self.services if s.name == "watcher"), None
        )
        if started is not None:
            url = f"http://127.0.0.1:{started['http_port']}/status"
            with contextlib.suppress(httpx.HTTPError):
                parts.append("--- watcher /status ---\n" + httpx.get(url, timeout=2).text)
        records = await read_all(self.kafka, CHAIN_TRANSFERS)
        parts.append(f"--- chain.transfers: {len(records)} records ---")
        parts += [r.value.decode()[:300] for r in records if r.value]
        return "\n".join(parts)

    async def watcher_leads(self, timeout: float = 60) -> None:
        """Wait until the watcher holds the lease and scans."""
        watcher = self.service("watcher")

        async def leads() -> bool:
            return watcher.find(WATCHER_LEADS) is not None

        await self.until(leads, bool, timeout)


def start_pipeline(
    env: Mapping[str, str],
    *,
    port: int,
    network: str,
    api_env: Mapping[str, str] | None = None,
    matcher_env: Mapping[str, str] | None = None,
    anvil: Anvil | None = None,
) -> Pipeline:
    """api (on ``port``), matcher and the ``network`` watcher (test mode) as processes; the
    watcher never gets a database. ``api_env``/``matcher_env`` add to ``env`` for one of them."""
    watcher_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}  # it never needs one
    api = [bin_path("pago-api"), "--host", "127.0.0.1", "--port", str(port)]
    watcher = [bin_path("pago-watcher"), "--network", network, "--mode", "test"]
    services: list[ServiceProcess] = []
    try:
        services.append(ServiceProcess("api", api, {**env, **(api_env or {})}))
        services.append(
            ServiceProcess("matcher", [bin_path("pago-matcher")], {**env, **(matcher_env or {})})
        )
        services.append(ServiceProcess("watcher", watcher, watcher_env))
    except BaseException:
        for service in services:
            service.stop()
        raise
    return Pipeline(services, kafka=env.get("KAFKA_BOOTSTRAP_SERVERS"), anvil=anvil)


async def wait_healthy(api: httpx.AsyncClient, pipeline: Pipeline, timeout: float = 60) -> None:
    """Wait until the api answers ``/healthz`` with 200."""

    async def healthy() -> int:
        try:
            return (await api.get("/healthz")).status_code
        except httpx.TransportError:
            return 0

    await pipeline.until(healthy, lambda code: code == 200, timeout)


@contextlib.asynccontextmanager
async def api_client(
    base_url: str, pipeline: Pipeline, key: str | None = None, health_timeout: float = 60
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the api (as the merchant, given ``key``), once the api is healthy."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as api:
        await wait_healthy(api, pipeline, health_timeout)
        yield api


async def create_session(api: httpx.AsyncClient, network: str, reference: str) -> Session:
    """POST a 10 USDT session on ``network`` (201 asserted); the created session."""
    created = await api.post(
        "/v1/checkout/sessions",
        json={
            "pricing_amount": "10",
            "pricing_currency": "USDT",
            "currency": "USDT",
            "network": network,
            "client_reference_id": reference,
        },
    )
    assert created.status_code == 201, created.text
    session: Session = created.json()
    return session


async def get_session(api: httpx.AsyncClient, session_id: str) -> Session:
    response = await api.get(f"/v1/checkout/sessions/{session_id}")
    assert response.status_code == 200, response.text
    data: Session = response.json()
    return data


async def wait_for_session(
    pipeline: Pipeline,
    api: httpx.AsyncClient,
    session_id: str,
    ok: Callable[[Session], bool],
    timeout: float = 60,
) -> Session:
    """Poll GET on the session until ``ok``; the session then."""

    async def get() -> Session:
        return await get_session(api, session_id)

    session: Session = await pipeline.until(get, ok, timeout)
    return session


async def wait_for_status(
    pipeline: Pipeline, api: httpx.AsyncClient, session_id: str, status: str, timeout: float = 60
) -> Session:
    """Poll GET on the session until its status is ``status``."""
    return await wait_for_session(
        pipeline, api, session_id, lambda s: s["status"] == status, timeout
    )


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless chromium under Playwright (fails, saying so, when it is missing)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def checkout_stack(
    server_env: Mapping[str, str],
    matcher_env: Mapping[str, str] | None = None,
    health_timeout: float = 60,
) -> AsyncIterator[str]:
    """api, matcher and notifier as processes on this run's servers (the matcher's consumer
    group rebalances fast; ``matcher_env`` adds to its environment); yields the api's URL."""
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    env = {**server_env, "PAGO_CHECKOUT_BASE_URL": f"{base}/checkout/", "PAGO_LOG_LEVEL": "INFO"}
    matcher = {
        **env,
        "PAGO_MATCHER_HTTP_PORT": "0",
        **(matcher_env or {}),
        "PAGO_MATCHER_BATCH_WAIT_MS": "20",
        "PAGO_MATCHER_FETCH_WAIT_MS": "50",
        "PAGO_MATCHER_SESSION_TIMEOUT_MS": "1000",
        "PAGO_MATCHER_HEARTBEAT_MS": "250",
    }
    notifier = {
        **env,
        "PAGO_NOTIFIER_HTTP_PORT": "0",
        "PAGO_NOTIFIER_GROUP_ID": f"notifier-e2e-{uuid.uuid4().hex[:8]}",
        "PAGO_NOTIFIER_BATCH_WAIT_MS": "20",
        "PAGO_NOTIFIER_FETCH_WAIT_MS": "50",
    }
    pipeline = Pipeline([])
    try:
        pipeline.services.append(
            ServiceProcess("api", [bin_path("pago-api"), "--port", str(port)], env)
        )
        pipeline.services.append(ServiceProcess("matcher", [bin_path("pago-matcher")], matcher))
        pipeline.services.append(ServiceProcess("notifier", [bin_path("pago-notifier")], notifier))
        await asyncio.gather(
            pipeline.service("matcher").wait_log_async("matcher started"),
            pipeline.service("notifier").wait_log_async("notifier started"),
        )
        async with api_client(base, pipeline, health_timeout=health_timeout):
            pass
        yield base
    finally:
        pipeline.stop()
