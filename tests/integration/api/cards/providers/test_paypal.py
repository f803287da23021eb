"""The PayPal adapter against the local PayPal over real HTTP: token caching, create, idempotent
retries, failure modes as error classes, approval → webhook → capture → webhook, verification."""

from __future__ import annotations

import dataclasses
import html
import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pago.api.cards.providers.base import (
    InvalidSignature,
    OrderItem,
    ProviderNotification,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from pago.api.cards.providers.paypal import PayPalAdapter, to_value
from pago.common.enums import CardSessionStatus
from pago.devstack._support import free_tcp_port
from tests.support.cardproviders import seed_order
from tests.support.paypal import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, LocalPayPal, local_paypal
from tests.support.receiver import Receiver

HOOK = "/api/v1/webhooks/paypal"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
def calls() -> list[str]:
    """The paths the adapter requested, in order."""
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def adapter(
    paypal: LocalPayPal, calls: list[str], clock: Clock
) -> AsyncIterator[PayPalAdapter]:
    async def record(request: httpx.Request) -> None:
        calls.append(request.url.path.removeprefix("/paypal"))

    client = httpx.AsyncClient(timeout=1.0, event_hooks={"request": [record]})
    adapter = PayPalAdapter(
        base_url=paypal.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        webhook_id=WEBHOOK_ID,
        client=client,
        clock=clock,
    )
    yield adapter
    await adapter.aclose()
    await client.aclose()


async def get_order(paypal: LocalPayPal, order_id: str) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        token = await paypal.token(client)
        response = await client.get(
            f"{paypal.url}/v2/checkout/orders/{order_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        order: dict[str, object] = response.json(parse_float=Decimal)
        return order


async def payer(checkout_url: str, button: str) -> httpx.Response:
    """What the approval page does when the payer presses ``button`` (``Pay`` or ``Decline``):
    its form's POST, read from the page."""
    async with httpx.AsyncClient() as client:
        page = await client.get(checkout_url)
        assert page.status_code == 200
        assert "140.76 AUD" in page.text
        form = re.search(
            rf'<form method="post" action="([^"]+)"><button type="submit" aria-label="{button}">',
            page.text,
        )
        assert form is not None, page.text
        return await client.post(html.unescape(form.group(1)))


class TestAmounts:
    @pytest.mark.parametrize(
        ("minor", "exponent", "value"),
        [
            (14076, 2, "140.76"),
            (11900, 2, "119.00"),
            (5, 2, "0.05"),
            (1500, 0, "1500"),
            (1234, 3, "1.234"),
            (-995, 2, "-9.95"),
        ],
    )
    def test_decimal_string_from_minor_units(self, minor: int, exponent: int, value: str) -> None:
        assert to_value(minor, exponent) == value


class TestCreate:
    async def test_the_seed_order_becomes_a_paypal_order(
        self, adapter: PayPalAdapter, paypal: LocalPayPal
    ) -> None:
        session_id = str(uuid.uuid4())
        checkout = await adapter.create_checkout(
            seed_order(session_id=session_id), idempotency_key="k-1"
        )

        assert checkout.raw_status == "PAYER_ACTION_REQUIRED"
        assert checkout.checkout_url == f"{paypal.url}/checkoutnow?token={checkout.reference}"
        assert checkout.expires_at is not None
        order = await get_order(paypal, checkout.reference)
        unit = order["purchase_units"][0]  # type: ignore[index]
        assert unit["custom_id"] == session_id
        assert unit["reference_id"] == "ORD-2024-001"
        assert unit["amount"] == {
            "currency_code": "AUD",
            "value": "140.76",
            "breakdown": {
                "item_total": {"currency_code": "AUD", "value": "119.00"},
                "shipping": {"currency_code": "AUD", "value": "9.95"},
                "tax_total": {"currency_code": "AUD", "value": "11.81"},
            },
        }
        assert unit["items"] == [
            {
                "name": "Wireless Headphones",
                "sku": "WH-100",
                "quantity": "1",
                "unit_amount": {"currency_code": "AUD", "value": "119.00"},
            }
        ]
        assert unit["shipping"]["address"]["admin_area_2"] == "Melbourne"

    async def test_jpy_has_no_decimals(self, adapter: PayPalAdapter, paypal: LocalPayPal) -> None:
        order = dataclasses.replace(
            seed_order(),
            currency="JPY",
            exponent=0,
            total=3300,
            shipping=500,
            tax=300,
            items=[OrderItem("Cable", None, 2, 1250)],
        )
        checkout = await adapter.create_checkout(order, idempotency_key="k-jpy")

        unit = (await get_order(paypal, checkout.reference))["purchase_units"][0]  # type: ignore[index]
        assert unit["amount"]["value"] == "3300"
        assert unit["items"][0]["unit_amount"]["value"] == "1250"

    async def test_a_retry_with_the_same_key_is_the_same_order(
        self, adapter: PayPalAdapter
    ) -> None:
        order = seed_order()
        first = await adapter.create_checkout(order, idempotency_key="same")
        again = await adapter.create_checkout(order, idempotency_key="same")
        other = await adapter.create_checkout(order, idempotency_key="other")

        assert again == first
        assert other.reference != first.reference

    async def test_a_key_longer_than_paypal_takes_is_still_idempotent(
        self, adapter: PayPalAdapter
    ) -> None:
        order = seed_order()
        key = "k" * 255
        first = await adapter.create_checkout(order, idempotency_key=key)
        assert (await adapter.create_checkout(order, idempotency_key=key)) == first


class TestToken:
    async def test_one_token_serves_many_calls(
        self, adapter: PayPalAdapter, calls: list[str]
    ) -> None:
        for key in ("a", "b", "c"):
            await adapter.create_checkout(seed_order(), idempotency_key=key)

        assert calls.count("/v1/oauth2/token") == 1
        assert calls.count("/v2/checkout/orders") == 3

    async def test_a_token_is_renewed_before_it_expires(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, calls: list[str], clock: Clock
    ) -> None:
        await paypal.control(token_expires_in=3600)
        await adapter.create_checkout(seed_order(), idempotency_key="a")
        clock.now += 3600 - 301  # still more than the 5-minute margin left
        await adapter.create_checkout(seed_order(), idempotency_key="b")
        assert calls.count("/v1/oauth2/token") == 1

        clock.now += 2  # inside the margin: renewed before PayPal would refuse it
        await adapter.create_checkout(seed_order(), idempotency_key="c")
        assert calls.count("/v1/oauth2/token") == 2

    async def test_a_token_paypal_no_longer_takes_is_replaced_once(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, calls: list[str]
    ) -> None:
        await paypal.control(token_expires_in=0)  # every token is expired when it arrives
        with pytest.raises(ProviderUnavailable, match="AUTHENTICATION_FAILURE"):
            await adapter.create_checkout(seed_order(), idempotency_key="a")
        assert calls == [
            "/v1/oauth2/token",
            "/v2/checkout/orders",
            "/v1/oauth2/token",
            "/v2/checkout/orders",
        ]

    async def test_refused_credentials_make_paypal_unavailable(self, paypal: LocalPayPal) -> None:
        adapter = PayPalAdapter(
            base_url=paypal.url, client_id=CLIENT_ID, client_secret="wrong", webhook_id=WEBHOOK_ID
        )
        try:
            with pytest.raises(ProviderUnavailable, match="token: HTTP 401"):
                await adapter.create_checkout(seed_order(), idempotency_key="a")
        finally:
            await adapter.aclose()


class TestFailures:
    @pytest.mark.parametrize(
        ("mode", "word"),
        [("server_error", "INTERNAL_SERVER_ERROR"), ("rate_limited", "RATE_LIMIT_REACHED")],
    )
    async def test_5xx_and_429_are_unavailable(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, mode: str, word: str
    ) -> None:
        await paypal.control(mode=mode, count=1)
        with pytest.raises(ProviderUnavailable, match=word):
            await adapter.create_checkout(seed_order(), idempotency_key="f")
        # The fault was for one call: the retry creates the order.
        checkout = await adapter.create_checkout(seed_order(), idempotency_key="f")
        assert checkout.raw_status == "PAYER_ACTION_REQUIRED"

    async def test_a_timeout_is_unavailable_and_its_retry_finds_the_orphan(
        self, adapter: PayPalAdapter, paypal: LocalPayPal
    ) -> None:
        await paypal.control(mode="timeout", count=1, timeout_seconds=1.5)
        order = seed_order()
        with pytest.raises(ProviderTimeout, match="timed out"):
            await adapter.create_checkout(order, idempotency_key="slow")

        retried = await adapter.create_checkout(order, idempotency_key="slow")
        assert await paypal.order_ids() == [retried.reference]
        assert (await get_order(paypal, retried.reference))["status"] == "PAYER_ACTION_REQUIRED"

    async def test_an_unreachable_paypal_is_unavailable(self) -> None:
        adapter = PayPalAdapter(
            base_url=f"http://127.0.0.1:{free_tcp_port()}/paypal",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            webhook_id=WEBHOOK_ID,
        )
        try:
            with pytest.raises(ProviderUnavailable, match="ConnectError"):
                await adapter.create_checkout(seed_order(), idempotency_key="x")
        finally:
            await adapter.aclose()

    async def test_an_order_whose_parts_do_not_sum_is_rejected(
        self, adapter: PayPalAdapter
    ) -> None:
        order = dataclasses.replace(seed_order(), total=14077)
        with pytest.raises(ProviderRejected, match="AMOUNT_MISMATCH"):
            await adapter.create_checkout(order, idempotency_key="sum")

    async def test_a_currency_paypal_does_not_take_is_rejected(
        self, adapter: PayPalAdapter
    ) -> None:
        order = dataclasses.replace(
            seed_order(),
            currency="KWD",
            exponent=3,
            total=140760,
            shipping=9950,
            tax=11810,
            items=[OrderItem("Wireless Headphones", "WH-100", 1, 119000)],
        )
        with pytest.raises(ProviderRejected, match="INVALID_CURRENCY_CODE"):
            await adapter.create_checkout(order, idempotency_key="kwd")

    async def test_capture_before_approval_is_rejected(self, adapter: PayPalAdapter) -> None:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key="c")
        with pytest.raises(ProviderRejected, match="ORDER_NOT_APPROVED"):
            await adapter.capture(checkout.reference)


class TestApproval:
    async def test_pay_approves_then_the_capture_completes(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        session_id = str(uuid.uuid4())
        checkout = await adapter.create_checkout(
            seed_order(session_id=session_id), idempotency_key="pay"
        )

        redirect = await payer(checkout.checkout_url, "Pay")
        assert redirect.status_code == 303
        assert redirect.headers["location"].startswith(
            f"https://merchant.example.com/checkout/success?token={checkout.reference}&PayerID="
        )
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
        approved = receiver.at(HOOK)[0]
        [notification] = await adapter.parse_webhook(approved.headers, approved.body)
        assert notification.event_type == "CHECKOUT.ORDER.APPROVED"
        assert notification.outcome is None
        assert notification.reference == checkout.reference
        assert notification.session_id == session_id
        assert notification.event_id.startswith("WH-")
        assert (await adapter.retrieve(checkout.reference)).outcome is None

        await adapter.on_notification(notification)
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 2)
        captured = receiver.at(HOOK)[1]
        [done] = await adapter.parse_webhook(captured.headers, captured.body)
        assert done.event_type == "PAYMENT.CAPTURE.COMPLETED"
        assert done.outcome is CardSessionStatus.COMPLETED
        assert done.reference == checkout.reference
        assert done.session_id == session_id
        assert done.occurred_at is not None
        status = await adapter.retrieve(checkout.reference)
        assert (status.raw_status, status.outcome) == ("COMPLETED", CardSessionStatus.COMPLETED)

        # A redelivered approval captures nothing twice.
        await adapter.on_notification(notification)
        assert (await adapter.capture(checkout.reference)).outcome is CardSessionStatus.COMPLETED
        assert len(await paypal.events()) == 2

    async def test_decline_sends_the_payer_back_and_the_capture_is_declined(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        session_id = str(uuid.uuid4())
        checkout = await adapter.create_checkout(
            seed_order(session_id=session_id), idempotency_key="no"
        )

        redirect = await payer(checkout.checkout_url, "Decline")
        assert redirect.headers["location"].startswith(
            "https://merchant.example.com/checkout/failure?token="
        )
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
        [approved] = await adapter.parse_webhook(
            receiver.at(HOOK)[0].headers, receiver.at(HOOK)[0].body
        )
        await adapter.on_notification(approved)
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 2)
        [declined] = await adapter.parse_webhook(
            receiver.at(HOOK)[1].headers, receiver.at(HOOK)[1].body
        )

        assert declined.event_type == "PAYMENT.CAPTURE.DECLINED"
        assert declined.outcome is CardSessionStatus.FAILED
        assert declined.session_id == session_id
        assert (await adapter.retrieve(checkout.reference)).outcome is CardSessionStatus.FAILED

    async def test_the_decline_failure_mode_declines_at_capture(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        await paypal.control(mode="decline", count=1)
        checkout = await adapter.create_checkout(seed_order(), idempotency_key="d")
        await payer(checkout.checkout_url, "Pay")
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
        [approved] = await adapter.parse_webhook(
            receiver.at(HOOK)[0].headers, receiver.at(HOOK)[0].body
        )

        await adapter.on_notification(approved)
        assert (await adapter.retrieve(checkout.reference)).outcome is CardSessionStatus.FAILED


async def captures_of(paypal: LocalPayPal, order_id: str) -> int:
    units: Any = (await get_order(paypal, order_id))["purchase_units"]
    return sum(len(unit["payments"]["captures"]) for unit in units)


class TestReconcile:
    async def approved(
        self, adapter: PayPalAdapter, receiver: Receiver, key: str
    ) -> tuple[str, ProviderNotification]:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key=key)
        await payer(checkout.checkout_url, "Pay")
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
        [approved] = await adapter.parse_webhook(
            receiver.at(HOOK)[0].headers, receiver.at(HOOK)[0].body
        )
        return checkout.reference, approved

    async def test_an_approved_order_is_captured_once(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        reference, _ = await self.approved(adapter, receiver, "r1")

        first = await adapter.reconcile(reference)
        again = await adapter.reconcile(reference)

        assert (first.raw_status, first.outcome) == ("COMPLETED", CardSessionStatus.COMPLETED)
        assert again.outcome is CardSessionStatus.COMPLETED
        assert await captures_of(paypal, reference) == 1
        assert [e["event"]["event_type"] for e in await paypal.events()] == [
            "CHECKOUT.ORDER.APPROVED",
            "PAYMENT.CAPTURE.COMPLETED",
        ]

    async def test_an_unapproved_order_is_only_read(
        self, adapter: PayPalAdapter, paypal: LocalPayPal
    ) -> None:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key="r")

        status = await adapter.reconcile(checkout.reference)

        assert (status.raw_status, status.outcome) == ("PAYER_ACTION_REQUIRED", None)

    async def test_a_capture_the_server_error_failed_is_made_later(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        reference, approved = await self.approved(adapter, receiver, "r2")
        await paypal.control(mode="server_error", count=1, call="capture")

        with pytest.raises(ProviderUnavailable, match="HTTP 500"):
            await adapter.on_notification(approved)
        assert (await adapter.retrieve(reference)).raw_status == "APPROVED"

        assert (await adapter.reconcile(reference)).outcome is CardSessionStatus.COMPLETED

    async def test_a_capture_that_timed_out_is_not_made_twice(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> None:
        reference, approved = await self.approved(adapter, receiver, "r3")
        await paypal.control(mode="timeout", count=1, call="capture", timeout_seconds=2)

        with pytest.raises(ProviderTimeout):
            await adapter.on_notification(approved)
        await adapter.on_notification(approved)

        assert await captures_of(paypal, reference) == 1
        assert (await adapter.reconcile(reference)).outcome is CardSessionStatus.COMPLETED


class TestVerification:
    @pytest.fixture
    async def delivered(
        self, adapter: PayPalAdapter, paypal: LocalPayPal, receiver: Receiver
    ) -> tuple[dict[str, str], bytes]:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key="v")
        await payer(checkout.checkout_url, "Pay")
        await receiver.wait_for(lambda r: len(r.at(HOOK)) == 1)
        request = receiver.at(HOOK)[0]
        return request.headers, request.body

    async def test_the_event_as_sent_verifies(
        self, adapter: PayPalAdapter, delivered: tuple[dict[str, str], bytes]
    ) -> None:
        headers, body = delivered
        assert len(await adapter.parse_webhook(headers, body)) == 1

    async def test_a_changed_body_does_not_verify(
        self, adapter: PayPalAdapter, delivered: tuple[dict[str, str], bytes]
    ) -> None:
        headers, body = delivered
        tampered = body.replace(b'"value":"140.76"', b'"value":"1.00"', 1)
        assert tampered != body
        with pytest.raises(InvalidSignature, match="FAILURE"):
            await adapter.parse_webhook(headers, tampered)

    async def test_a_changed_signature_does_not_verify(
        self, adapter: PayPalAdapter, delivered: tuple[dict[str, str], bytes]
    ) -> None:
        headers, body = delivered
        signature = headers["paypal-transmission-sig"]
        forged = {
            **headers,
            "paypal-transmission-sig": ("A" if signature[0] != "A" else "B") + signature[1:],
        }
        with pytest.raises(InvalidSignature):
            await adapter.parse_webhook(forged, body)

    async def test_another_webhook_id_does_not_verify(
        self, paypal: LocalPayPal, delivered: tuple[dict[str, str], bytes]
    ) -> None:
        headers, body = delivered
        other = PayPalAdapter(
            base_url=paypal.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            webhook_id="1JE4291016473214C",
        )
        try:
            with pytest.raises(InvalidSignature):
                await other.parse_webhook(headers, body)
        finally:
            await other.aclose()

    async def test_missing_headers_do_not_verify_and_cost_no_call(
        self, adapter: PayPalAdapter, calls: list[str], delivered: tuple[dict[str, str], bytes]
    ) -> None:
        headers, body = delivered
        before = len(calls)
        without = {k: v for k, v in headers.items() if k != "paypal-transmission-sig"}
        with pytest.raises(InvalidSignature, match="paypal-transmission-sig"):
            await adapter.parse_webhook(without, body)
        with pytest.raises(InvalidSignature, match="JSON"):
            await adapter.parse_webhook(headers, b"not json")
        assert len(calls) == before
