"""The local Adyen's Standard webhooks against Adyen's published HMAC scheme.

The test vector is the one Adyen's docs and libraries publish (key ``44782DEF…``, item
``7914073381342284`` / ``TestPayment-1407325143704`` / EUR 1130, signature ``coqCmt…``); the
independent verifier is Adyen's own Python library (``Adyen.util.is_valid_hmac_notification``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
from Adyen.util import is_valid_hmac_notification

from pago.devstack.cardproviders.adyen import hmac_payload, hmac_signature
from tests.support.adyen import HMAC_KEY, SECRETS, serve_adyen
from tests.support.receiver import Receiver, Reply

PUBLISHED_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "merchantAccountCode": "TestMerchant",
    "merchantReference": "TestPayment-1407325143704",
    "amount": {"value": 1130, "currency": "EUR"},
    "eventCode": "AUTHORISATION",
    "success": "true",
    "eventDate": "2019-05-06T17:15:34.121+02:00",
}
PUBLISHED_PAYLOAD = (
    "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
)
PUBLISHED_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="


class TestPublishedVector:
    def test_payload_is_the_published_one(self) -> None:
        assert hmac_payload(PUBLISHED_ITEM) == PUBLISHED_PAYLOAD

    def test_signature_is_the_published_one(self) -> None:
        assert hmac_signature(PUBLISHED_ITEM, HMAC_KEY) == PUBLISHED_SIGNATURE

    def test_adyen_library_agrees(self) -> None:
        item = {**PUBLISHED_ITEM, "additionalData": {"hmacSignature": PUBLISHED_SIGNATURE}}
        assert is_valid_hmac_notification(item, HMAC_KEY)
        tampered = copy.deepcopy(item)
        tampered["amount"]["value"] = 1131
        assert not is_valid_hmac_notification(tampered, HMAC_KEY)


def _order(url: str) -> dict[str, Any]:
    return {
        "merchantAccount": SECRETS["merchant_account"],
        "amount": {"currency": "AUD", "value": 14076},
        "reference": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9",
        "returnUrl": url,
        "mode": "hosted",
        "metadata": {"pagoSessionId": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"},
    }


class TestDeliveredNotification:
    async def test_pay_sends_a_notification_adyen_verifies(self) -> None:
        receiver = Receiver()
        await receiver.start()
        receiver.script("/hook")
        try:
            async with serve_adyen(receiver.url("/hook")) as adyen, httpx.AsyncClient() as http:
                created = await http.post(
                    f"{adyen.base_url}/v71/sessions",
                    json=_order("https://merchant.example/return"),
                    headers={"X-API-Key": SECRETS["api_key"]},
                )
                session = created.json()
                paid = await http.post(session["url"], data={"action": "pay"})
                assert paid.status_code == 303
                await receiver.wait_for(lambda r: len(r.at("/hook")) == 1)
        finally:
            await receiver.stop()
        request = receiver.at("/hook")[0]
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.body)
        assert body["live"] == "false"
        [entry] = body["notificationItems"]
        item = entry["NotificationRequestItem"]
        assert set(item) >= {
            "eventCode", "success", "pspReference", "merchantAccountCode", "merchantReference",
            "amount", "eventDate", "additionalData",
        }  # fmt: skip
        assert item["eventCode"] == "AUTHORISATION"
        assert item["success"] == "true"
        assert item["merchantReference"] == "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"
        assert item["merchantAccountCode"] == SECRETS["merchant_account"]
        assert item["amount"] == {"currency": "AUD", "value": 14076}
        assert item["additionalData"]["checkoutSessionId"] == session["id"]
        assert item["additionalData"]["metadata.pagoSessionId"] == item["merchantReference"]
        assert is_valid_hmac_notification(body, HMAC_KEY)
        body["notificationItems"][0]["NotificationRequestItem"]["success"] = "false"
        assert not is_valid_hmac_notification(body, HMAC_KEY)

    async def test_decline_sends_success_false_with_a_reason(self) -> None:
        async with serve_adyen() as adyen, httpx.AsyncClient() as http:
            created = await http.post(
                f"{adyen.base_url}/v71/sessions",
                json=_order("https://merchant.example/return?order=1"),
                headers={"X-API-Key": SECRETS["api_key"]},
            )
            session = created.json()
            declined = await http.post(session["url"], data={"action": "decline"})
            result = await http.get(
                f"{adyen.base_url}/v71/sessions/{session['id']}",
                headers={"X-API-Key": SECRETS["api_key"]},
            )
        location = httpx.URL(declined.headers["location"])
        assert location.params["order"] == "1"
        assert location.params["sessionId"] == session["id"]
        assert location.params["sessionResult"]
        [delivery] = adyen.fake.deliveries
        item = delivery.body["notificationItems"][0]["NotificationRequestItem"]
        assert (item["eventCode"], item["success"], item["reason"]) == (
            "AUTHORISATION", "false", "Refused",
        )  # fmt: skip
        assert is_valid_hmac_notification(delivery.body, HMAC_KEY)
        assert result.json() == {"id": session["id"], "status": "refused"}

    async def test_a_delivery_is_retried_until_accepted(self) -> None:
        receiver = Receiver()
        await receiver.start()
        # An endpoint that answers 200 without "[accepted]" has not accepted it.
        receiver.script("/hook", Reply(500), Reply(200, body=b"ok"), Reply(200, body=b"[accepted]"))
        try:
            async with serve_adyen(receiver.url("/hook")) as adyen, httpx.AsyncClient() as http:
                created = await http.post(
                    f"{adyen.base_url}/v71/sessions",
                    json=_order("https://merchant.example/return"),
                    headers={"X-API-Key": SECRETS["api_key"]},
                )
                await http.post(created.json()["url"], data={"action": "pay"})
                delivery = await adyen.wait_for_delivery(lambda d: d.accepted)
        finally:
            await receiver.stop()
        assert [a.split(" ")[0] for a in delivery.attempts] == ["500", "200", "200"]
        bodies = {r.body for r in receiver.at("/hook")}
        assert len(bodies) == 1  # the same notification, byte for byte, each time
