"""The Adyen adapter against the local Adyen over real HTTP: create, idempotent retry, failure
modes → error classes, retrieve, and webhook verification (good and tampered)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from pago.api.cards.providers.adyen import AdyenAdapter, adyen_idempotency_key
from pago.api.cards.providers.base import (
    Address,
    CardOrder,
    InvalidSignature,
    OrderItem,
    ProviderRejected,
    ProviderUnavailable,
)
from pago.common.enums import CardProvider, CardSessionStatus
from pago.devstack.cardproviders.context import FailureMode
from tests.support.adyen import SECRETS, LocalAdyen, serve_adyen

MELBOURNE = Address("123 Collins Street", "Level 5", "Melbourne", "VIC", "3000", "AU")


def order(**changes: object) -> CardOrder:
    fields: dict[str, object] = {
        "session_id": str(uuid.uuid4()),
        "order_reference": "ORD-2024-001",
        "currency": "AUD",
        "exponent": 2,
        "total": 14076,
        "shipping": 995,
        "tax": 1181,
        "items": [OrderItem("Wireless Headphones", "WH-100", 1, 11900)],
        "locale": "en_AU",
        "customer_email": "jane.smith@example.com",
        "customer_first_name": "Jane",
        "customer_last_name": "Smith",
        "customer_phone": "+61412345678",
        "billing_address": MELBOURNE,
        "shipping_address": MELBOURNE,
        "success_url": "https://merchant.example.com/checkout/success",
        "failure_url": "https://merchant.example.com/checkout/failure",
        "expires_at": datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1),
    }
    fields.update(changes)
    return CardOrder(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def adyen() -> AsyncIterator[LocalAdyen]:
    async with serve_adyen() as local:
        yield local


def adapter_for(adyen: LocalAdyen, *, timeout: float = 5.0, **secrets: str) -> AdyenAdapter:
    given = {**SECRETS, **secrets}
    return AdyenAdapter(
        base_url=adyen.base_url,
        api_key=given["api_key"],
        merchant_account=given["merchant_account"],
        hmac_key=given["hmac_key"],
        timeout=timeout,
    )


@pytest.fixture
async def adapter(adyen: LocalAdyen) -> AsyncIterator[AdyenAdapter]:
    client = adapter_for(adyen)
    yield client
    await client.aclose()


class TestCreate:
    async def test_creates_a_hosted_session(self, adyen: LocalAdyen, adapter: AdyenAdapter) -> None:
        the_order = order()
        checkout = await adapter.create_checkout(the_order, idempotency_key="pago-key-1")
        assert checkout.provider is CardProvider.ADYEN
        assert checkout.raw_status == "active"
        assert checkout.expires_at == the_order.expires_at
        session = adyen.fake.sessions[checkout.reference]
        assert checkout.checkout_url == session.response["url"]
        sent = session.request
        assert sent["reference"] == the_order.session_id
        assert sent["merchantOrderReference"] == "ORD-2024-001"
        assert sent["amount"] == {"currency": "AUD", "value": 14076}
        assert sent["mode"] == "hosted"
        assert sum(line["amountIncludingTax"] * line["quantity"] for line in sent["lineItems"]) == (
            14076
        )
        assert sent["metadata"] == {"pagoSessionId": the_order.session_id}

    async def test_adyens_minor_units_where_they_differ_from_iso(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        # ISK has no minor unit in ISO 4217 and two digits at Adyen.
        isk = order(currency="ISK", exponent=0, total=1500, shipping=0, tax=0,
                    items=[OrderItem("Wool hat", None, 1, 1500)])  # fmt: skip
        checkout = await adapter.create_checkout(isk, idempotency_key="isk")
        assert adyen.fake.sessions[checkout.reference].request["amount"]["value"] == 150000
        # IDR has two in ISO 4217 and none at Adyen: a fraction of a rupiah cannot be sent.
        idr = order(currency="IDR", exponent=2, total=1050, shipping=0, tax=0,
                    items=[OrderItem("Tea", None, 1, 1050)])  # fmt: skip
        with pytest.raises(ProviderRejected):
            await adapter.create_checkout(idr, idempotency_key="idr")

    async def test_a_retry_with_the_same_key_returns_the_same_session(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        the_order = order()
        key = "x" * 255  # Pago's keys may be longer than Adyen's 64
        first = await adapter.create_checkout(the_order, idempotency_key=key)
        again = await adapter.create_checkout(the_order, idempotency_key=key)
        assert again == first
        assert len(adyen.fake.sessions) == 1
        other = await adapter.create_checkout(the_order, idempotency_key=key + "-2")
        assert other.reference != first.reference
        assert len(adyen_idempotency_key(key)) == 64

    async def test_a_timed_out_create_then_its_retry(self, adyen: LocalAdyen) -> None:
        adyen.ctx.faults.mode, adyen.ctx.faults.remaining = FailureMode.TIMEOUT, 1
        adyen.ctx.faults.timeout_seconds = 1.0
        impatient = adapter_for(adyen, timeout=0.2)
        the_order = order()
        try:
            with pytest.raises(ProviderUnavailable, match="timed out"):
                await impatient.create_checkout(the_order, idempotency_key="slow")
            # Still in flight at Adyen: 704 with transient-error, so unavailable, not rejected.
            with pytest.raises(ProviderUnavailable, match="704"):
                await impatient.create_checkout(the_order, idempotency_key="slow")
        finally:
            await impatient.aclose()

    @pytest.mark.parametrize(
        ("mode", "status"), [(FailureMode.SERVER_ERROR, 500), (FailureMode.RATE_LIMITED, 429)]
    )
    async def test_5xx_and_429_are_unavailable(
        self, adyen: LocalAdyen, adapter: AdyenAdapter, mode: FailureMode, status: int
    ) -> None:
        adyen.ctx.faults.mode, adyen.ctx.faults.remaining = mode, 1
        with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
            await adapter.create_checkout(order(), idempotency_key="k")
        # The failed call left the key free: the retry creates the session.
        checkout = await adapter.create_checkout(order(), idempotency_key="k")
        assert checkout.reference in adyen.fake.sessions

    async def test_a_server_that_is_gone_is_unavailable(self) -> None:
        async with serve_adyen() as gone:
            client = adapter_for(gone)
        try:
            with pytest.raises(ProviderUnavailable):
                await client.create_checkout(order(), idempotency_key="k")
        finally:
            await client.aclose()

    async def test_wrong_credentials_are_unavailable(self, adyen: LocalAdyen) -> None:
        for client in (adapter_for(adyen, api_key="wrong"),
                       adapter_for(adyen, merchant_account="Other")):  # fmt: skip
            try:
                with pytest.raises(ProviderUnavailable, match=r"HTTP 40[13]"):
                    await client.create_checkout(order(), idempotency_key="k")
            finally:
                await client.aclose()

    async def test_a_request_adyen_refuses_is_rejected(self, adapter: AdyenAdapter) -> None:
        too_late = datetime.now(UTC) + timedelta(days=3)
        with pytest.raises(ProviderRejected, match="HTTP 422"):
            await adapter.create_checkout(order(expires_at=too_late), idempotency_key="k")


class TestRetrieve:
    @pytest.mark.parametrize(
        ("action", "raw", "outcome"),
        [
            (None, "active", None),
            ("pay", "completed", CardSessionStatus.COMPLETED),
            ("decline", "refused", CardSessionStatus.FAILED),
        ],
    )
    async def test_maps_adyens_status(
        self,
        adapter: AdyenAdapter,
        action: str | None,
        raw: str,
        outcome: CardSessionStatus | None,
    ) -> None:
        checkout = await adapter.create_checkout(order(), idempotency_key=str(uuid.uuid4()))
        if action is not None:
            async with httpx.AsyncClient() as http:
                await http.post(checkout.checkout_url, data={"action": action})
        status = await adapter.retrieve(checkout.reference)
        assert (status.reference, status.raw_status, status.outcome) == (
            checkout.reference, raw, outcome,
        )  # fmt: skip

    async def test_decline_mode_declines_on_pay(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        adyen.ctx.faults.mode, adyen.ctx.faults.remaining = FailureMode.DECLINE, 1
        checkout = await adapter.create_checkout(order(), idempotency_key="d")
        async with httpx.AsyncClient() as http:
            await http.post(checkout.checkout_url, data={"action": "pay"})
        assert (await adapter.retrieve(checkout.reference)).outcome is CardSessionStatus.FAILED

    async def test_expire_is_a_no_op(self, adapter: AdyenAdapter) -> None:
        checkout = await adapter.create_checkout(order(), idempotency_key="e")
        await adapter.expire(checkout.reference)
        assert (await adapter.retrieve(checkout.reference)).raw_status == "active"


class TestWebhook:
    async def _paid(
        self, adyen: LocalAdyen, adapter: AdyenAdapter, action: str = "pay"
    ) -> tuple[str, str, bytes]:
        the_order = order()
        checkout = await adapter.create_checkout(the_order, idempotency_key=str(uuid.uuid4()))
        async with httpx.AsyncClient() as http:
            await http.post(checkout.checkout_url, data={"action": action})
        body = json.dumps(adyen.fake.deliveries[-1].body).encode()
        return the_order.session_id, checkout.reference, body

    async def test_verifies_and_normalises_an_authorisation(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        session_id, reference, body = await self._paid(adyen, adapter)
        [notification] = await adapter.parse_webhook({"content-type": "application/json"}, body)
        psp = adyen.fake.sessions[reference].psp_reference
        assert notification.provider is CardProvider.ADYEN
        assert notification.event_id == f"{psp}:AUTHORISATION:true"
        assert notification.event_type == "AUTHORISATION"
        assert notification.reference == reference
        assert notification.session_id == session_id
        assert notification.outcome is CardSessionStatus.COMPLETED
        assert notification.occurred_at is not None
        ack = adapter.webhook_ack()
        assert (ack.status_code, ack.body) == (200, b"[accepted]")

    async def test_a_declined_one_fails_the_session(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        _, _, body = await self._paid(adyen, adapter, action="decline")
        [notification] = await adapter.parse_webhook({}, body)
        assert notification.outcome is CardSessionStatus.FAILED
        assert notification.event_id.endswith(":AUTHORISATION:false")

    async def test_tampered_or_foreign_batches_are_refused(
        self, adyen: LocalAdyen, adapter: AdyenAdapter
    ) -> None:
        _, _, body = await self._paid(adyen, adapter)
        good = json.loads(body)
        tampered = json.loads(body)
        tampered["notificationItems"][0]["NotificationRequestItem"]["amount"]["value"] += 1
        with pytest.raises(InvalidSignature):
            await adapter.parse_webhook({}, json.dumps(tampered).encode())
        # One forged item rejects the whole batch, the genuine item with it.
        forged = json.loads(body)["notificationItems"][0]
        forged["NotificationRequestItem"]["pspReference"] = "FORGED0000000000"
        batch = {**good, "notificationItems": [*good["notificationItems"], forged]}
        with pytest.raises(InvalidSignature):
            await adapter.parse_webhook({}, json.dumps(batch).encode())
        other_key = adapter_for(adyen, hmac_key="00" * 32)
        try:
            with pytest.raises(InvalidSignature):
                await other_key.parse_webhook({}, body)
        finally:
            await other_key.aclose()
        for junk in (b"", b"[accepted]", b'{"notificationItems": []}'):
            with pytest.raises(InvalidSignature):
                await adapter.parse_webhook({}, junk)
