"""What a payer sees when a checkout ends without a sale: the Expired and Blocked hosted pages,
in a real browser (Debian's chromium driven by Playwright) with the api, matcher and notifier
running as processes. The page turns live from the SSE stream, then reads the same after a
reload (rendered on the server, no script needed); the regions and links keep accessible names.

Needs ``/usr/bin/chromium`` (``make test`` installs Debian's package). Screenshots are kept in
``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.e2e.support import ARTIFACTS, PHONE, checkout_stack, chromium
from tests.support.api import Merchant, crypto_body

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SANCTIONED = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
"""Listed in the matcher's sanctions list for this test (any EVM address would do)."""
SHOP = "https://acme.example"


@pytest.fixture
async def stack(server_env: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    """api, matcher (with a sanctions list) and notifier as processes; yields the api's URL."""
    lists = tmp_path / "aml"
    lists.mkdir()
    (lists / "ofac_sdn_test.txt").write_text(f"{SANCTIONED}\n")
    async with checkout_stack(server_env, {"PAGO_AML_LIST_PATH": str(lists)}) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def open_session(
    stack: str, api: httpx.AsyncClient, browser: Browser
) -> tuple[dict[str, str], Page]:
    created = await api.post(
        "/v1/checkout/sessions",
        json=crypto_body(
            network="ETHEREUM", success_url=f"{SHOP}/thanks", cancel_url=f"{SHOP}/cart"
        ),
    )
    assert created.status_code == 201, created.text
    session: dict[str, str] = created.json()
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    await page.goto(session["url"])
    await expect(page.locator("#headline")).to_have_text("Waiting for payment")
    await expect(page.get_by_label("Deposit address")).to_be_visible()
    return session, page


async def sees_the_end(page: Page, headline: str, detail: str) -> None:
    """The status region names the outcome; nothing invites a payment any more."""
    status = page.get_by_role("region", name="Payment status")
    await expect(status.get_by_role("status")).to_contain_text(headline, timeout=20_000)
    await expect(status.get_by_role("status")).to_have_attribute("aria-live", "polite")
    await expect(page.locator("#detail")).to_have_text(detail)
    await expect(page.locator("main")).to_have_attribute("data-phase", headline_phase(headline))
    # The deposit address, the QR code and the countdown are gone for the payer.
    await expect(page.get_by_role("region", name="How to pay")).to_be_hidden()
    await expect(page.get_by_label("Deposit address")).to_be_hidden()
    await expect(page.get_by_role("img", name="QR code of the payment request")).to_be_hidden()
    await expect(page.locator("#expiry")).to_be_hidden()
    await expect(page.get_by_role("link", name="Continue to Acme Shop")).to_have_count(0)
    await expect(page.get_by_role("region", name="Amount to pay")).to_be_visible()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acme Shop")


def headline_phase(headline: str) -> str:
    return {"This checkout has expired": "expired", "Payment not accepted": "blocked"}[headline]


async def test_an_expired_checkout(stack: str, merchant: Merchant, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with httpx.AsyncClient(base_url=stack, headers=merchant.headers(), timeout=10) as api:
        session, page = await open_session(stack, api, browser)
        expired = await api.post(f"/v1/checkout/sessions/{session['id']}/expire")
        assert expired.status_code == 200, expired.text

        texts = ("This checkout has expired", "No further payment is expected.")
        await sees_the_end(page, *texts)
        back = page.get_by_role("link", name="Return to Acme Shop")
        await expect(back).to_have_attribute("href", f"{SHOP}/cart")
        await page.screenshot(path=str(ARTIFACTS / "checkout_page_expired.png"))

        await page.reload()  # rendered on the server this time
        await sees_the_end(page, *texts)
        await expect(back).to_have_attribute("href", f"{SHOP}/cart")


async def test_a_blocked_payment(stack: str, merchant: Merchant, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with httpx.AsyncClient(base_url=stack, headers=merchant.headers(), timeout=10) as api:
        session, page = await open_session(stack, api, browser)
        paid = await api.post(
            f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers",
            json={"amount": session["amount"], "stage": "confirmed", "from_address": SANCTIONED},
        )
        assert paid.status_code == 202, paid.text

        texts = ("Payment not accepted", "Please contact Acme Shop about this payment.")
        await sees_the_end(page, *texts)
        await page.screenshot(path=str(ARTIFACTS / "checkout_page_blocked.png"))

        await page.reload()
        await sees_the_end(page, *texts)
        # The payer is never told why (no list name, no address): only whom to contact.
        body = await page.locator("main").inner_text()
        assert SANCTIONED.lower() not in body.lower()
        assert "ofac" not in body.lower()

        shown = (await api.get(f"/v1/checkout/sessions/{session['id']}")).json()
        assert shown["status"] == "Blocked"
