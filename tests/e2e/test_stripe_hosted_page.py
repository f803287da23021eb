"""The local Stripe's hosted page in a real browser: a payer pays with the keyboard, the
merchant's success page opens, and a webhook signed with Stripe's scheme arrives."""

from __future__ import annotations

import uuid

import pytest
import stripe
from playwright.async_api import expect

from pago.api.cards.providers.stripe import StripeAdapter
from pago.common.enums import CardSessionStatus
from pago.devstack.cardproviders import stripe as local_stripe
from pago.devstack.cardproviders.server import DEV_SECRETS
from tests.e2e.support import chromium
from tests.support.cardproviders import provider_server, seed_order

pytestmark = pytest.mark.slow

SECRETS = DEV_SECRETS["stripe"]
WEBHOOKS = "/api/v1/webhooks/stripe"


@pytest.mark.parametrize(
    ("button", "landing", "event_type", "outcome"),
    [
        ("Pay", "/merchant/success", "checkout.session.completed", CardSessionStatus.COMPLETED),
        (
            "Decline",
            "/merchant/failure",
            "checkout.session.async_payment_failed",
            CardSessionStatus.FAILED,
        ),
    ],
)
async def test_a_payer_presses_a_button_and_a_signed_webhook_arrives(
    button: str, landing: str, event_type: str, outcome: CardSessionStatus
) -> None:
    async with provider_server({"stripe": local_stripe.build}) as (server, receiver):
        adapter = StripeAdapter(
            api_key=SECRETS["api_key"],
            webhook_secret=SECRETS["webhook_secret"],
            base_url=server.url("stripe"),
        )
        order = seed_order(
            success_url=receiver.url("/merchant/success"),
            failure_url=receiver.url("/merchant/failure"),
        )
        try:
            checkout = await adapter.create_checkout(order, idempotency_key=str(uuid.uuid4()))
            async with chromium() as browser:
                page = await browser.new_page()
                await page.goto(checkout.checkout_url)

                await expect(page.get_by_role("heading", level=1)).to_have_text("Pay 140.76 AUD")
                await expect(page.locator("#amount-total")).to_have_text("140.76 AUD")
                buttons = page.get_by_role("button")
                await expect(buttons).to_have_count(2)
                # Every button has an accessible name, and each is reached with Tab.
                names = [
                    await b.evaluate("e => e.textContent.trim() || e.getAttribute('aria-label')")
                    for b in await buttons.all()
                ]
                assert names == ["Pay 140.76 AUD", "Decline"]
                target = page.get_by_role("button", name=button)
                for _ in range(len(names)):
                    await page.keyboard.press("Tab")
                    if await target.evaluate("e => e === document.activeElement"):
                        break
                await expect(target).to_be_focused()

                await page.keyboard.press("Enter")

                await page.wait_for_url(f"**{landing}")
                await browser.close()
            await receiver.wait_for(
                lambda r: any(d.event["type"] == event_type for d in r.at(WEBHOOKS))
            )
        finally:
            await adapter.aclose()
        delivery = next(d for d in receiver.at(WEBHOOKS) if d.event["type"] == event_type)
        event = stripe.Webhook.construct_event(
            delivery.body.decode(), delivery.headers["stripe-signature"], SECRETS["webhook_secret"]
        )
        assert event.data.object.id == checkout.reference
        [note] = await adapter.parse_webhook(delivery.headers, delivery.body)
        assert (note.session_id, note.outcome) == (order.session_id, outcome)
