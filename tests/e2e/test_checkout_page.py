"""The hosted checkout page in a real browser (Debian's chromium driven by Playwright), with the
api, the matcher and the notifier running as processes: a session walks from Pending to Paid
through the test-helper transfer, the page follows live, and sends the customer back to the shop.

Needs ``/usr/bin/chromium``, which ``make test`` installs (Debian's package); without it the test
fails saying so. The
screenshots are kept in ``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.e2e.support import ARTIFACTS, PHONE, checkout_stack, chromium
from tests.support.api import Merchant, crypto_body
from tests.support.qr_decoder import decode, matrix_from_svg
from tests.support.receiver import Receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]


@pytest.fixture
async def stack(server_env: dict[str, str]) -> AsyncIterator[str]:
    """api, matcher and notifier as processes on this run's servers; yields the api's URL."""
    async with checkout_stack(server_env, health_timeout=30) as base:
        yield base


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

        async with chromium() as browser:
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

        paid = (await api.get(f"/v1/checkout/sessions/{session['id']}")).json()
        assert paid["status"] == "Paid"
