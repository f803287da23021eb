"""The local PayPal's approval page in a real browser: the payer sees the amount, clicks Pay, lands
on the merchant's return URL, and the signed ``CHECKOUT.ORDER.APPROVED`` reaches the webhook
receiver and verifies through PayPal's verification API."""

from __future__ import annotations

import dataclasses
import uuid

from pago.api.cards.providers.paypal import PayPalAdapter
from tests.e2e.support import chromium
from tests.support.cardproviders import seed_order
from tests.support.paypal import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, local_paypal
from tests.support.receiver import Receiver

HOOK = "/api/v1/webhooks/paypal"


async def test_pay_on_the_approval_page_sends_a_signed_webhook() -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with local_paypal(receiver.url(HOOK)) as paypal:
            adapter = PayPalAdapter(
                base_url=paypal.url,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                webhook_id=WEBHOOK_ID,
            )
            session_id = str(uuid.uuid4())
            # The merchant's return page, served by the receiver so the browser lands somewhere.
            order = dataclasses.replace(
                seed_order(session_id=session_id), success_url=receiver.url("/checkout/success")
            )
            checkout = await adapter.create_checkout(order, idempotency_key="browser")
            async with chromium() as browser:
                page = await browser.new_page()
                await page.goto(checkout.checkout_url)
                assert await page.get_by_test_id("amount").inner_text() == "140.76 AUD"
                await page.get_by_role("button", name="Pay").click()
                await page.wait_for_url("**/checkout/success?token=*")

            await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
            request = receiver.at(HOOK)[0]
            assert request.event["event_type"] == "CHECKOUT.ORDER.APPROVED"
            [notification] = await adapter.parse_webhook(request.headers, request.body)
            assert notification.session_id == session_id
            assert notification.reference == checkout.reference
            await adapter.aclose()
    finally:
        await receiver.stop()
