"""The local Adyen's Checkout API ``/sessions`` against Adyen's reference (Checkout API v71):
field names of ``CreateCheckoutSessionResponse``, ``SessionResultResponse.status`` words, the
``ServiceError`` shape and the documented idempotency behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pago.devstack.cardproviders.adyen import STATUSES
from pago.devstack.cardproviders.context import FailureMode
from tests.support.adyen import SECRETS, LocalAdyen, serve_adyen

RESPONSE_FIELDS = frozenset(
    [
        "accountInfo",
        "additionalAmount",
        "additionalData",
        "allowedPaymentMethods",
        "amount",
        "applicationInfo",
        "authenticationData",
        "billingAddress",
        "blockedPaymentMethods",
        "captureDelayHours",
        "channel",
        "company",
        "countryCode",
        "dateOfBirth",
        "deliverAt",
        "deliveryAddress",
        "enableOneClick",
        "enablePayOut",
        "enableRecurring",
        "expiresAt",
        "fundOrigin",
        "fundRecipient",
        "id",
        "installmentOptions",
        "lineItems",
        "mandate",
        "mcc",
        "merchantAccount",
        "merchantOrderReference",
        "metadata",
        "mode",
        "mpiData",
        "platformChargebackLogic",
        "recurringExpiry",
        "recurringFrequency",
        "recurringProcessingModel",
        "redirectFromIssuerMethod",
        "redirectToIssuerMethod",
        "reference",
        "returnUrl",
        "riskData",
        "sessionData",
        "shopperEmail",
        "shopperIP",
        "shopperInteraction",
        "shopperLocale",
        "shopperName",
        "shopperReference",
        "shopperStatement",
        "showInstallmentAmount",
        "showRemovePaymentMethodButton",
        "socialSecurityNumber",
        "splitCardFundingSources",
        "splits",
        "store",
        "storeFiltrationMode",
        "storePaymentMethod",
        "storePaymentMethodMode",
        "telephoneNumber",
        "themeId",
        "threeDS2RequestData",
        "threeDSAuthenticationOnly",
        "trustedShopper",
        "url",
    ]
)
"""``CreateCheckoutSessionResponse`` (v71) property names."""
REQUIRED_RESPONSE_FIELDS = {
    "amount",
    "expiresAt",
    "id",
    "merchantAccount",
    "reference",
    "returnUrl",
}
SERVICE_ERROR_FIELDS = {"status", "errorCode", "message", "errorType", "pspReference"}
ADYEN_STATUSES = {"active", "canceled", "completed", "expired", "paymentPending", "refused"}


def body(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "merchantAccount": SECRETS["merchant_account"],
        "amount": {"currency": "AUD", "value": 14076},
        "reference": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9",
        "merchantOrderReference": "ORD-2024-001",
        "returnUrl": "https://merchant.example.com/checkout/success",
        "countryCode": "AU",
        "shopperLocale": "en_AU",
        "shopperEmail": "jane.smith@example.com",
        "shopperName": {"firstName": "Jane", "lastName": "Smith"},
        "telephoneNumber": "+61412345678",
        "billingAddress": {
            "street": "123 Collins Street", "houseNumberOrName": "Level 5", "city": "Melbourne",
            "stateOrProvince": "VIC", "postalCode": "3000", "country": "AU",
        },
        "lineItems": [
            {"id": "WH-100", "description": "Wireless Headphones", "quantity": 1,
             "amountIncludingTax": 11900},
        ],
        "mode": "hosted",
        "metadata": {"pagoSessionId": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"},
    }  # fmt: skip
    order.update(changes)
    return order


AUTH = {"X-API-Key": SECRETS["api_key"]}


@pytest.fixture
async def adyen() -> AsyncIterator[LocalAdyen]:
    async with serve_adyen() as local:
        yield local


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class TestCreate:
    async def test_response_fields_are_adyens(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        response = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=AUTH)
        assert response.status_code == 201
        session = response.json()
        assert set(session) <= RESPONSE_FIELDS
        assert set(session) >= REQUIRED_RESPONSE_FIELDS | {"sessionData", "url", "mode"}
        assert session["id"].startswith("CS")
        assert session["mode"] == "hosted"
        assert session["url"].startswith(f"{adyen.base_url}/checkoutshopper/")
        assert session["amount"] == {"currency": "AUD", "value": 14076}
        assert session["merchantOrderReference"] == "ORD-2024-001"

    async def test_the_hosted_page_shows_the_amount_and_two_labelled_buttons(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        session = (
            await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=AUTH)
        ).json()
        page = await http.get(session["url"])
        assert page.status_code == 200
        assert "AUD 14076" in page.text
        assert ">Pay</button>" in page.text
        assert ">Decline</button>" in page.text

    async def test_status_words_are_adyens(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        assert set(STATUSES) == ADYEN_STATUSES
        session = (
            await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=AUTH)
        ).json()
        result = await http.get(f"{adyen.base_url}/v71/sessions/{session['id']}", headers=AUTH)
        assert result.json() == {"id": session["id"], "status": "active"}
        await http.post(session["url"], data={"action": "pay"})
        result = await http.get(
            f"{adyen.base_url}/v71/sessions/{session['id']}",
            params={"sessionResult": "x"}, headers=AUTH,
        )  # fmt: skip
        assert result.json() == {"id": session["id"], "status": "completed"}


class TestErrors:
    @pytest.mark.parametrize(
        ("headers", "payload", "status", "error_type"),
        [
            ({}, body(), 401, "security"),
            ({"X-API-Key": "wrong"}, body(), 401, "security"),
            (AUTH, body(merchantAccount="SomeoneElse"), 403, "security"),
            (AUTH, {k: v for k, v in body().items() if k != "reference"}, 422, "validation"),
            (AUTH, {k: v for k, v in body().items() if k != "returnUrl"}, 422, "validation"),
            (AUTH, body(amount={"currency": "AUD", "value": "140.76"}), 422, "validation"),
            (AUTH, body(expiresAt="2000-01-01T00:00:00+00:00"), 422, "validation"),
        ],
    )
    async def test_service_error_shape(
        self,
        adyen: LocalAdyen,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        payload: dict[str, Any],
        status: int,
        error_type: str,
    ) -> None:
        response = await http.post(f"{adyen.base_url}/v71/sessions", json=payload, headers=headers)
        assert response.status_code == status
        error = response.json()
        assert set(error) == SERVICE_ERROR_FIELDS
        assert error["status"] == status
        assert error["errorType"] == error_type
        assert isinstance(error["errorCode"], str)
        assert adyen.fake.sessions == {}

    @pytest.mark.parametrize(
        ("mode", "status", "error_type"),
        [
            (FailureMode.SERVER_ERROR, 500, "internal"),
            (FailureMode.RATE_LIMITED, 429, "throttling"),
        ],
    )
    async def test_failure_modes_answer_in_adyens_format(
        self,
        adyen: LocalAdyen,
        http: httpx.AsyncClient,
        mode: FailureMode,
        status: int,
        error_type: str,
    ) -> None:
        control = await http.post(f"{adyen.base_url}/_control", json={"mode": mode, "count": 1})
        assert control.status_code == 200
        failed = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=AUTH)
        assert failed.status_code == status
        assert set(failed.json()) == SERVICE_ERROR_FIELDS
        assert failed.json()["errorType"] == error_type
        again = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=AUTH)
        assert again.status_code == 201


class TestIdempotency:
    async def test_same_key_returns_the_first_response(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        headers = {**AUTH, "Idempotency-Key": "k" * 64}
        first = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=headers)
        second = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert second.headers["idempotency-key"] == "k" * 64
        assert len(adyen.fake.sessions) == 1

    async def test_a_key_over_64_characters_is_refused(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        headers = {**AUTH, "Idempotency-Key": "k" * 65}
        response = await http.post(f"{adyen.base_url}/v71/sessions", json=body(), headers=headers)
        assert response.status_code == 422
        assert set(response.json()) == SERVICE_ERROR_FIELDS

    async def test_a_duplicate_in_flight_is_704_transient(
        self, adyen: LocalAdyen, http: httpx.AsyncClient
    ) -> None:
        adyen.ctx.faults.mode, adyen.ctx.faults.remaining = FailureMode.TIMEOUT, 1
        adyen.ctx.faults.timeout_seconds = 1.0
        headers = {**AUTH, "Idempotency-Key": "slow-1"}
        url = f"{adyen.base_url}/v71/sessions"
        first = asyncio.create_task(http.post(url, json=body(), headers=headers))
        faults = adyen.ctx.faults
        while faults.mode is not FailureMode.OK:  # until the slow call took its mode
            await asyncio.sleep(0.01)
        duplicate = await http.post(url, json=body(), headers=headers)
        assert duplicate.status_code == 422
        assert duplicate.json()["errorCode"] == "704"
        assert duplicate.headers["transient-error"] == "true"
        assert (await first).status_code == 201
        replay = await http.post(url, json=body(), headers=headers)
        assert replay.json() == (await first).json()
