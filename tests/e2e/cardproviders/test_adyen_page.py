"""The local Adyen's hosted page in a real browser: Pay sends a signed AUTHORISATION to the
webhook endpoint, Decline a refused one, and the shopper lands on ``returnUrl``."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from Adyen.util import is_valid_hmac_notification

from tests.e2e.support import PHONE, chromium
from tests.support.adyen import HMAC_KEY, SECRETS, serve_adyen
from tests.support.receiver import Receiver, Reply

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize(("button", "success"), [("Pay", "true"), ("Decline", "false")])
async def test_the_hosted_page_sends_a_signed_notification(button: str, success: str) -> None:
    receiver = Receiver()
    await receiver.start()
    receiver.script("/webhooks/adyen", Reply(200, body=b"[accepted]"))
    reference = str(uuid.uuid4())
    try:
        async with serve_adyen(receiver.url("/webhooks/adyen")) as adyen:
            async with httpx.AsyncClient() as http:
                created = await http.post(
                    f"{adyen.base_url}/v71/sessions",
                    headers={"X-API-Key": SECRETS["api_key"]},
                    json={
                        "merchantAccount": SECRETS["merchant_account"],
                        "amount": {"currency": "AUD", "value": 14076},
                        "reference": reference,
                        "returnUrl": receiver.url("/return?order=ORD-1"),
                        "mode": "hosted",
                    },
                )
            session = created.json()
            async with chromium() as browser:
                page = await browser.new_page(viewport=PHONE)
                await page.goto(session["url"])
                assert "AUD 14076" in await page.locator("#amount").inner_text()
                await page.get_by_role("button", name="Pay").wait_for()
                await page.get_by_role("button", name="Decline").wait_for()
                await page.get_by_role("button", name=button).click()
                await receiver.wait_for(lambda r: bool(r.at("/webhooks/adyen")))
                await receiver.wait_for(lambda r: any(p.startswith("/return") for p in
                                                      {q.path for q in r.requests}))  # fmt: skip
                landed = httpx.URL(page.url)
                await page.close()
            delivery = await adyen.wait_for_delivery(lambda d: d.accepted)
    finally:
        await receiver.stop()
    [notification] = receiver.at("/webhooks/adyen")
    body = json.loads(notification.body)
    assert is_valid_hmac_notification(body, HMAC_KEY)
    item = body["notificationItems"][0]["NotificationRequestItem"]
    assert (item["eventCode"], item["success"], item["merchantReference"]) == (
        "AUTHORISATION", success, reference,
    )  # fmt: skip
    assert delivery.body == body
    assert landed.path == "/return"
    assert landed.params["order"] == "ORD-1"
    assert landed.params["sessionId"] == session["id"]
