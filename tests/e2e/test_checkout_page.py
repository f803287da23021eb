"""The hosted checkout page in a real browser (Debian's chromium driven by Playwright), with the
api, the matcher and the notifier running as processes: a session walks from Pending to Paid
through the test-helper transfer, the page follows live, and sends the customer back to the shop.

Needs ``/usr/bin/chromium``, which ``make test`` installs (Debian's package); without it the test
fails saying so. The
screenshots are kept in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.devstack._support import free_tcp_port
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from tests.component.api.support import Merchant, api_settings, crypto_body, seed_merchant
from tests.component.checkout_page.qr_decoder import decode, matrix_from_svg
from tests.integration.notifier.receiver import Receiver

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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]


class Service:
    """One service process; its JSON log lines are collected as they come."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.logs: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)  # a full pipe freezes
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line.rstrip()})

    async def logged(self, message: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(entry.get("msg") == message for entry in self.logs):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never logged {message!r}: {self.logs[-15:]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


@pytest.fixture
async def stack(server_env: dict[str, str]) -> AsyncIterator[str]:
    """api, matcher and notifier as processes on this run's servers; yields the api's URL."""
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    env = {**server_env, "PAGO_CHECKOUT_BASE_URL": f"{base}/checkout/", "PAGO_LOG_LEVEL": "INFO"}
    bin_dir = Path(sys.executable).parent
    services = [
        Service("api", [str(bin_dir / "pago-api"), "--port", str(port)], env),
        Service(
            "matcher",
            [str(bin_dir / "pago-matcher")],
            {
                **env,
                "PAGO_MATCHER_HTTP_PORT": "0",
                "PAGO_MATCHER_BATCH_WAIT_MS": "20",
                "PAGO_MATCHER_FETCH_WAIT_MS": "50",
                "PAGO_MATCHER_SESSION_TIMEOUT_MS": "1000",
                "PAGO_MATCHER_HEARTBEAT_MS": "250",
            },
        ),
        Service(
            "notifier",
            [str(bin_dir / "pago-notifier")],
            {
                **env,
                "PAGO_NOTIFIER_HTTP_PORT": "0",
                "PAGO_NOTIFIER_GROUP_ID": f"notifier-e2e-{uuid.uuid4().hex[:8]}",
                "PAGO_NOTIFIER_BATCH_WAIT_MS": "20",
                "PAGO_NOTIFIER_FETCH_WAIT_MS": "50",
            },
        ),
    ]
    try:
        await asyncio.gather(
            services[1].logged("matcher started"), services[2].logged("notifier started")
        )
        async with httpx.AsyncClient(base_url=base) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"the api did not start: {services[0].logs}"
                await asyncio.sleep(0.1)
        yield base
    finally:
        for service in services:
            service.stop()


@pytest.fixture
async def shop() -> AsyncIterator[Receiver]:
    """The merchant's site: where ``success_url`` and ``cancel_url`` lead."""
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def merchant(
    db: AsyncEngine, database: Database, redis_server: RedisServer, kafka: KafkaServer
) -> Merchant:
    settings = api_settings(database.url, redis_server.url, kafka.bootstrap_servers)
    return await seed_merchant(db, settings)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


async def headline(page: Page, text: str, timeout: float = 20_000) -> None:
    await expect(page.locator("#headline")).to_have_text(text, timeout=timeout)


async def test_a_customer_pays_and_returns_to_the_shop(
    stack: str, shop: Receiver, merchant: Merchant, artifacts: Path
) -> None:
    async with httpx.AsyncClient(base_url=stack, headers=merchant.headers(), timeout=10) as api:
        created = await api.post(
            "/v1/checkout/sessions",
            json=crypto_body(
                network="ETHEREUM",
                success_url=shop.url("/thanks"),
                cancel_url=shop.url("/cart"),
            ),
        )
        assert created.status_code == 201, created.text
        session = created.json()
        assert session["url"] == f"{stack}/checkout/{session['id']}"

        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
            )
            context = await browser.new_context(viewport=PHONE)
            page = await context.new_page()
            try:
                await page.goto(session["url"])
                await headline(page, "Waiting for payment")
                await expect(page.get_by_role("heading", level=1)).to_have_text("Acme Shop")
                await expect(page.locator("#amount-due")).to_have_text(session["amount"])
                await expect(page.locator("#network")).to_have_text("ETHEREUM (Sepolia)")
                await expect(page.get_by_label("Deposit address")).to_have_value(
                    session["pay_address"]
                )
                await expect(page.get_by_role("status")).to_have_attribute("aria-live", "polite")
                await expect(page.locator("#countdown")).to_have_text(re.compile(r"^\d+:\d\d$"))
                await expect(page.locator("#logo")).to_have_count(0)  # unreachable: not shown

                units = int(Decimal(session["amount_expected"]).scaleb(6))
                expected = (
                    f"ethereum:{session['currency_contract']}@11155111/transfer"
                    f"?address={session['pay_address']}&uint256={units}"
                )
                qr = page.locator("#qr")
                await expect(qr).to_have_attribute("data-qr-payload", expected)
                svg = await page.request.get(stack + str(await qr.get_attribute("src")))
                assert decode(matrix_from_svg(await svg.text())).decode() == expected
                assert await qr.evaluate("img => img.naturalWidth > 0")

                # Phone width: nothing scrolls sideways.
                assert await page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth"
                )
                await page.get_by_role("button", name="Copy").click()
                await expect(page.get_by_role("button", name="Copied")).to_be_visible()
                await page.screenshot(path=str(artifacts / "checkout_page_waiting.png"))

                transfers = f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers"
                detected = await api.post(
                    transfers, json={"amount": session["amount"], "stage": "detected"}
                )
                assert detected.status_code == 202, detected.text
                await headline(page, "Payment detected")
                await expect(page.locator("#detail")).to_have_text(
                    "Waiting for confirmations (0 of 12)."
                )

                part = await api.post(transfers, json={"amount": "4", "stage": "confirmed"})
                assert part.status_code == 202, part.text
                rest = Decimal(session["amount"]) - 4
                await headline(page, "Partial payment received")
                await expect(page.locator("#detail")).to_have_text(
                    f"Received 4 of {session['amount']} USDT. Send the remaining {rest} USDT."
                )
                await expect(page.locator("#amount-due")).to_have_text(str(rest))
                await expect(qr).to_have_attribute(
                    "data-qr-payload", expected.replace(str(units), str(int(rest.scaleb(6))))
                )

                confirmed = await api.post(
                    transfers, json={"amount": str(rest), "stage": "confirmed"}
                )
                assert confirmed.status_code == 202, confirmed.text
                await headline(page, "Payment received")
                await expect(page.locator("#amount-due")).to_have_text(session["amount"])
                await expect(page.get_by_role("link", name="Continue to Acme Shop")).to_be_visible()
                await page.screenshot(path=str(artifacts / "checkout_page.png"))

                await page.wait_for_url(shop.url("/thanks"), timeout=10_000)
                assert len(shop.at("/thanks")) == 1
            finally:
                await context.close()
                await browser.close()

        paid = (await api.get(f"/v1/checkout/sessions/{session['id']}")).json()
        assert paid["status"] == "Paid"
