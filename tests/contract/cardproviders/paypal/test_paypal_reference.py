"""The local PayPal held to PayPal's published REST reference (Orders v2, Notifications v1, OAuth2):
field names, status words, the error object, idempotency, and the webhook signature scheme.

The expectations are written from the reference, not from the fake: the error ``name`` per HTTP
status (``INVALID_REQUEST`` 400, ``AUTHENTICATION_FAILURE`` 401, ``RESOURCE_NOT_FOUND`` 404,
``UNPROCESSABLE_ENTITY`` 422, ``RATE_LIMIT_REACHED`` 429, ``INTERNAL_SERVER_ERROR`` 500), the
``details[].issue`` codes the create and capture operations list, ``Prefer`` minimal/representation,
``PayPal-Request-Id`` (an idempotent replay answers ``200``), and the signature: SHA256withRSA
over ``transmission_id|transmission_time|webhook_id|crc32`` with the CRC32 of the raw body as a
decimal integer, checked here with an independent implementation (``cryptography`` and
``zlib``). No published signature vector can be checked offline (PayPal's examples name
certificates on its own hosts), so CRC32 is pinned by its standard check value instead.
"""

from __future__ import annotations

import base64
import copy
import json
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pago.devstack.cardproviders.paypal import signed_message
from tests.support.paypal import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, LocalPayPal, local_paypal
from tests.support.receiver import Receiver

HOOK = "/hook"
ERROR_KEYS = {"name", "message", "debug_id", "details", "links"}


def seed_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "reference_id": "ORD-2024-001",
                "custom_id": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9",
                "amount": {
                    "currency_code": "AUD",
                    "value": "140.76",
                    "breakdown": {
                        "item_total": {"currency_code": "AUD", "value": "119.00"},
                        "shipping": {"currency_code": "AUD", "value": "9.95"},
                        "tax_total": {"currency_code": "AUD", "value": "11.81"},
                    },
                },
                "items": [
                    {
                        "name": "Wireless Headphones",
                        "sku": "WH-100",
                        "quantity": "1",
                        "unit_amount": {"currency_code": "AUD", "value": "119.00"},
                    }
                ],
            }
        ],
        "payment_source": {
            "paypal": {
                "experience_context": {
                    "return_url": "https://merchant.example.com/ok",
                    "cancel_url": "https://merchant.example.com/no",
                    "locale": "en-AU",
                    "user_action": "PAY_NOW",
                }
            }
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def paypal(receiver: Receiver) -> AsyncIterator[LocalPayPal]:
    async with local_paypal(receiver.url(HOOK)) as server:
        yield server


@pytest.fixture
async def client(paypal: LocalPayPal) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=paypal.url) as http:
        token = await paypal.token(http)
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


async def create(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/v2/checkout/orders", json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, name: str, issue: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= ERROR_KEYS
    assert body["name"] == name
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["debug_id"], str)
    assert body["debug_id"]
    assert all({"href", "rel"} <= set(link) for link in body["links"])
    if issue is None:
        assert "details" not in body
    else:
        [detail] = body["details"]
        assert detail["issue"] == issue
        assert set(detail) <= {"field", "value", "location", "issue", "description"}


async def approve(paypal: LocalPayPal, order_id: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{paypal.url}/checkoutnow/{order_id}/approve")
        assert response.status_code == 303


class TestToken:
    async def test_client_credentials_answer_a_bearer_token(self, paypal: LocalPayPal) -> None:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{paypal.url}/v1/oauth2/token",
                auth=(CLIENT_ID, CLIENT_SECRET),
                data={"grant_type": "client_credentials"},
            )
        body = response.json()
        assert response.status_code == 200
        assert set(body) == {"scope", "access_token", "token_type", "app_id", "expires_in", "nonce"}
        assert body["token_type"] == "Bearer"
        assert isinstance(body["expires_in"], int)
        assert body["expires_in"] > 0

    async def test_wrong_credentials_are_an_oauth_error(self, paypal: LocalPayPal) -> None:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{paypal.url}/v1/oauth2/token",
                auth=(CLIENT_ID, "nope"),
                data={"grant_type": "client_credentials"},
            )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    async def test_no_token_is_authentication_failure(self, paypal: LocalPayPal) -> None:
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{paypal.url}/v2/checkout/orders", json=seed_body())
        assert_error(response, 401, "AUTHENTICATION_FAILURE", None)


class TestCreateOrder:
    async def test_minimal_is_the_default(self, client: httpx.AsyncClient) -> None:
        response = await create(client, seed_body())
        body = response.json()
        assert response.status_code == 201
        assert set(body) == {"id", "status", "links"}
        assert body["status"] == "PAYER_ACTION_REQUIRED"
        rels = {link["rel"]: link["method"] for link in body["links"]}
        assert rels == {"self": "GET", "payer-action": "GET"}

    async def test_representation_is_the_whole_order(self, client: httpx.AsyncClient) -> None:
        response = await create(client, seed_body(), Prefer="return=representation")
        body = response.json()
        assert {"id", "intent", "status", "purchase_units", "create_time", "links"} <= set(body)
        unit = body["purchase_units"][0]
        assert unit["amount"] == seed_body()["purchase_units"][0]["amount"]
        assert unit["custom_id"] == "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"
        assert body["create_time"].endswith("Z")

    async def test_application_context_makes_a_created_order_with_an_approve_link(
        self, client: httpx.AsyncClient
    ) -> None:
        body = seed_body(application_context={"return_url": "https://m.example/ok"})
        del body["payment_source"]
        created = (await create(client, body)).json()
        assert created["status"] == "CREATED"
        rels = {link["rel"] for link in created["links"]}
        assert rels == {"self", "approve", "update", "capture"}

    async def test_the_same_request_id_answers_the_same_order(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await create(client, seed_body(), **{"PayPal-Request-Id": "req-1"})
        replay = await create(client, seed_body(), **{"PayPal-Request-Id": "req-1"})
        other = await create(client, seed_body(), **{"PayPal-Request-Id": "req-2"})
        assert (first.status_code, replay.status_code) == (201, 200)
        assert replay.json() == first.json()
        assert other.json()["id"] != first.json()["id"]

    async def test_get_answers_the_order(self, client: httpx.AsyncClient) -> None:
        created = (await create(client, seed_body())).json()
        order = (await client.get(f"/v2/checkout/orders/{created['id']}")).json()
        assert order["id"] == created["id"]
        assert order["status"] == "PAYER_ACTION_REQUIRED"
        assert order["intent"] == "CAPTURE"


def with_amount(value: str, currency: str = "AUD", **breakdown: str) -> dict[str, Any]:
    body = seed_body()
    amount = body["purchase_units"][0]["amount"]
    amount["value"], amount["currency_code"] = value, currency
    for part, money in amount["breakdown"].items():
        money["currency_code"] = currency
        if part in breakdown:
            money["value"] = breakdown[part]
    for item in body["purchase_units"][0]["items"]:
        item["unit_amount"]["currency_code"] = currency
    return body


class TestCreateOrderErrors:
    @pytest.mark.parametrize(
        ("body", "issue"),
        [
            (with_amount("140.77"), "AMOUNT_MISMATCH"),
            (with_amount("141.76", item_total="120.00"), "ITEM_TOTAL_MISMATCH"),
            (with_amount("140.760"), "DECIMAL_PRECISION"),
            (
                with_amount("140", "JPY", item_total="119", shipping="10", tax_total="11.5"),
                "DECIMAL_PRECISION",
            ),
            (with_amount("140.76", "KWD"), "INVALID_CURRENCY_CODE"),
            (
                with_amount("0", item_total="0", shipping="0", tax_total="0"),
                "CANNOT_BE_ZERO_OR_NEGATIVE",
            ),
        ],
    )
    async def test_amounts_are_checked_like_paypal(
        self, client: httpx.AsyncClient, body: dict[str, Any], issue: str
    ) -> None:
        assert_error(await create(client, body), 422, "UNPROCESSABLE_ENTITY", issue)

    async def test_jpy_without_decimals_is_accepted(self, client: httpx.AsyncClient) -> None:
        body = with_amount("140", "JPY", item_total="119", shipping="10", tax_total="11")
        body["purchase_units"][0]["items"][0]["unit_amount"]["value"] = "119"
        assert (await create(client, body)).status_code == 201

    async def test_items_need_an_item_total(self, client: httpx.AsyncClient) -> None:
        body = seed_body()
        del body["purchase_units"][0]["amount"]["breakdown"]
        assert_error(await create(client, body), 422, "UNPROCESSABLE_ENTITY", "ITEM_TOTAL_REQUIRED")

    async def test_the_field_is_a_json_pointer_by_reference_id(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await create(client, with_amount("140.77"))
        [detail] = response.json()["details"]
        assert detail["field"] == "/purchase_units/@reference_id=='ORD-2024-001'/amount/value"
        assert detail["value"] == "140.77"

    @pytest.mark.parametrize(
        ("body", "issue", "field"),
        [
            ({"purchase_units": []}, "MISSING_REQUIRED_PARAMETER", "/intent"),
            ({"intent": "SALE", "purchase_units": []}, "INVALID_PARAMETER_VALUE", "/intent"),
            (
                {"intent": "CAPTURE", "purchase_units": []},
                "INVALID_ARRAY_MIN_ITEMS",
                "/purchase_units",
            ),
        ],
    )
    async def test_a_malformed_request_is_invalid_request(
        self, client: httpx.AsyncClient, body: dict[str, Any], issue: str, field: str
    ) -> None:
        response = await create(client, body)
        assert_error(response, 400, "INVALID_REQUEST", issue)
        assert response.json()["details"][0]["field"] == field

    async def test_a_body_that_is_not_json_is_malformed(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v2/checkout/orders", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON")

    async def test_an_unknown_order_is_resource_not_found(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v2/checkout/orders/5O190127TN364715T")
        assert_error(response, 404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")

    @pytest.mark.parametrize(
        ("mode", "status", "name"),
        [
            ("server_error", 500, "INTERNAL_SERVER_ERROR"),
            ("rate_limited", 429, "RATE_LIMIT_REACHED"),
        ],
    )
    async def test_failure_modes_answer_in_paypal_format(
        self, client: httpx.AsyncClient, paypal: LocalPayPal, mode: str, status: int, name: str
    ) -> None:
        await paypal.control(mode=mode, count=1)
        assert_error(await create(client, seed_body()), status, name, None)


class TestCapture:
    async def test_before_approval_is_order_not_approved(self, client: httpx.AsyncClient) -> None:
        created = (await create(client, seed_body())).json()
        response = await client.post(f"/v2/checkout/orders/{created['id']}/capture", json={})
        assert_error(response, 422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED")

    async def test_after_approval_completes_once(
        self, client: httpx.AsyncClient, paypal: LocalPayPal
    ) -> None:
        created = (await create(client, seed_body())).json()
        await approve(paypal, created["id"])
        assert (await client.get(f"/v2/checkout/orders/{created['id']}")).json()["status"] == (
            "APPROVED"
        )
        headers = {"PayPal-Request-Id": "cap-1"}
        url = f"/v2/checkout/orders/{created['id']}/capture"
        response = await client.post(url, json={}, headers=headers)
        body = response.json()
        assert response.status_code == 201
        assert body["status"] == "COMPLETED"
        [capture] = body["purchase_units"][0]["payments"]["captures"]
        assert capture["status"] == "COMPLETED"
        assert capture["amount"] == {"currency_code": "AUD", "value": "140.76"}
        assert {"id", "final_capture", "links", "create_time"} <= set(capture)

        replay = await client.post(url, json={}, headers=headers)
        assert (replay.status_code, replay.json()) == (200, body)
        again = await client.post(url, json={}, headers={"PayPal-Request-Id": "cap-2"})
        assert_error(again, 422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED")


class TestWebhooks:
    async def capture_events(
        self, client: httpx.AsyncClient, paypal: LocalPayPal, receiver: Receiver
    ) -> list[Any]:
        created = (await create(client, seed_body())).json()
        await approve(paypal, created["id"])
        await client.post(f"/v2/checkout/orders/{created['id']}/capture", json={})
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 2)
        return receiver.at(HOOK)

    async def test_events_have_paypals_shape(
        self, client: httpx.AsyncClient, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        approved, captured = [r.event for r in await self.capture_events(client, paypal, receiver)]
        keys = {
            "id",
            "event_version",
            "create_time",
            "resource_type",
            "resource_version",
            "event_type",
            "summary",
            "resource",
            "links",
        }
        for event in (approved, captured):
            assert set(event) == keys
            assert event["id"].startswith("WH-")
            assert event["event_version"] == "1.0"
        assert (approved["event_type"], approved["resource_type"]) == (
            "CHECKOUT.ORDER.APPROVED",
            "checkout-order",
        )
        assert approved["resource"]["status"] == "APPROVED"
        assert (captured["event_type"], captured["resource_type"]) == (
            "PAYMENT.CAPTURE.COMPLETED",
            "capture",
        )
        resource = captured["resource"]
        assert resource["status"] == "COMPLETED"
        assert resource["custom_id"] == "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"
        assert (
            resource["supplementary_data"]["related_ids"]["order_id"] == approved["resource"]["id"]
        )

    async def test_the_signature_is_sha256withrsa_over_the_documented_string(
        self, client: httpx.AsyncClient, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        for request in await self.capture_events(client, paypal, receiver):
            headers = request.headers
            assert headers["paypal-auth-algo"] == "SHA256withRSA"
            cert_pem = (await client.get(headers["paypal-cert-url"])).content
            public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
            assert isinstance(public_key, rsa.RSAPublicKey)
            # Written from PayPal's description, not with the fake's helper.
            message = "|".join(
                [
                    headers["paypal-transmission-id"],
                    headers["paypal-transmission-time"],
                    WEBHOOK_ID,
                    str(zlib.crc32(request.body)),
                ]
            ).encode()
            public_key.verify(
                base64.b64decode(headers["paypal-transmission-sig"]),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )

    def test_crc32_is_the_standard_one_as_an_unsigned_decimal(self) -> None:
        # CRC-32 (ISO-HDLC, zlib's) check value for "123456789" is 0xCBF43926.
        assert signed_message("t", "2024-01-15T11:00:00Z", "W", b"123456789") == (
            b"t|2024-01-15T11:00:00Z|W|3421780262"
        )

    async def test_verify_webhook_signature(
        self, client: httpx.AsyncClient, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        request = (await self.capture_events(client, paypal, receiver))[1]
        h = request.headers
        event = json.loads(request.body, parse_float=Decimal)
        payload = {
            "auth_algo": h["paypal-auth-algo"],
            "cert_url": h["paypal-cert-url"],
            "transmission_id": h["paypal-transmission-id"],
            "transmission_sig": h["paypal-transmission-sig"],
            "transmission_time": h["paypal-transmission-time"],
            "webhook_id": WEBHOOK_ID,
            "webhook_event": event,
        }
        url = "/v1/notifications/verify-webhook-signature"

        async def verdict(body: dict[str, Any]) -> str:
            response = await client.post(url, json=body)
            assert response.status_code == 200
            assert set(response.json()) == {"verification_status"}
            return str(response.json()["verification_status"])

        assert await verdict(payload) == "SUCCESS"
        assert await verdict({**payload, "webhook_id": "1JE4291016473214C"}) == "FAILURE"
        tampered = copy.deepcopy(event)
        tampered["resource"]["amount"]["value"] = "1.00"
        assert await verdict({**payload, "webhook_event": tampered}) == "FAILURE"
        other_time = {**payload, "transmission_time": "2024-01-15T11:00:00Z"}
        assert await verdict(other_time) == "FAILURE"

        del payload["webhook_id"]
        assert_error(
            await client.post(url, json=payload),
            400,
            "INVALID_REQUEST",
            "MISSING_REQUIRED_PARAMETER",
        )
