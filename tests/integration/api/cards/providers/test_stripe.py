"""Pago's Stripe adapter against the local Stripe, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from pago.api.cards.providers.base import (
    InvalidSignature,
    OrderItem,
    ProviderRejected,
    ProviderUnavailable,
)
from pago.api.cards.providers.stripe import StripeAdapter
from pago.common.enums import CardProvider, CardSessionStatus
from pago.devstack._support import free_tcp_port
from pago.devstack.cardproviders import stripe as local_stripe
from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.cardproviders.server import DEV_SECRETS, CardProviderServer
from tests.support.cardproviders import provider_server, seed_order
from tests.support.receiver import Received, Receiver

SECRETS = DEV_SECRETS["stripe"]
WEBHOOKS = "/api/v1/webhooks/stripe"


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[tuple[CardProviderServer, Receiver]]:
    async with provider_server({"stripe": local_stripe.build}) as running:
        yield running


@pytest.fixture
def server(stack: tuple[CardProviderServer, Receiver]) -> Iterator[CardProviderServer]:
    yield stack[0]
    stack[0].set_failure("stripe", FailureMode.OK)


@pytest.fixture
def receiver(stack: tuple[CardProviderServer, Receiver]) -> Receiver:
    stack[1].reset()
    return stack[1]


@pytest.fixture
async def adapter(server: CardProviderServer) -> AsyncIterator[StripeAdapter]:
    stripe = StripeAdapter(
        api_key=SECRETS["api_key"],
        webhook_secret=SECRETS["webhook_secret"],
        base_url=server.url("stripe"),
        timeout=2.0,
    )
    try:
        yield stripe
    finally:
        await stripe.aclose()


async def stripe_session(server: CardProviderServer, reference: str) -> dict[str, Any]:
    """The session as the local Stripe holds it (read with Stripe's own API)."""
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{server.url('stripe')}/v1/checkout/sessions/{reference}",
            headers={"Authorization": f"Bearer {SECRETS['api_key']}"},
        )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def press(server: CardProviderServer, reference: str, action: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{server.url('stripe')}/pay/{reference}", data={"action": action})
    assert answer.status_code == 303


def headers_of(delivery: Received) -> dict[str, str]:
    return dict(delivery.headers)


class TestCreate:
    async def test_the_seed_order_becomes_an_open_checkout(
        self, adapter: StripeAdapter, server: CardProviderServer
    ) -> None:
        order = seed_order()

        checkout = await adapter.create_checkout(order, idempotency_key=str(uuid.uuid4()))

        assert checkout.provider is CardProvider.STRIPE
        assert checkout.reference.startswith("cs_test_")
        assert checkout.checkout_url == f"{server.url('stripe')}/pay/{checkout.reference}"
        assert checkout.raw_status == "open"
        assert checkout.expires_at is not None
        assert abs(checkout.expires_at.timestamp() - order.expires_at.timestamp()) < 2
        held = await stripe_session(server, checkout.reference)
        assert (held["currency"], held["amount_total"]) == ("aud", 14076)
        assert held["total_details"]["amount_shipping"] == 995
        assert held["client_reference_id"] == order.session_id
        assert held["metadata"] == {
            "pago_session_id": order.session_id,
            "order_reference": "ORD-2024-001",
        }
        assert held["customer_email"] == "jane.smith@example.com"
        assert held["locale"] == "en"  # en_AU is no Checkout locale; its language is

    async def test_a_zero_decimal_currency_goes_as_is(
        self, adapter: StripeAdapter, server: CardProviderServer
    ) -> None:
        order = seed_order(
            currency="JPY", exponent=0, total=15000, shipping=500, tax=1000,
            items=[OrderItem(name="Tea set", sku=None, quantity=3, unit_price=4500)],
        )  # fmt: skip
        checkout = await adapter.create_checkout(order, idempotency_key=str(uuid.uuid4()))
        held = await stripe_session(server, checkout.reference)
        assert (held["currency"], held["amount_total"]) == ("jpy", 15000)

    async def test_three_decimals_end_in_zero_or_are_refused(
        self, adapter: StripeAdapter, server: CardProviderServer
    ) -> None:
        kwd = seed_order(
            currency="KWD", exponent=3, total=12340, shipping=1000, tax=1340,
            items=[OrderItem(name="Lamp", sku=None, quantity=2, unit_price=5000)],
        )  # fmt: skip
        checkout = await adapter.create_checkout(kwd, idempotency_key=str(uuid.uuid4()))
        assert (await stripe_session(server, checkout.reference))["amount_total"] == 12340

        # A part ending in 5 with a total ending in 0: one line for the order, still exact.
        odd_part = dataclasses.replace(kwd, shipping=1005, tax=1335)
        checkout = await adapter.create_checkout(odd_part, idempotency_key=str(uuid.uuid4()))
        assert (await stripe_session(server, checkout.reference))["amount_total"] == 12340

        with pytest.raises(ProviderRejected, match="last digit"):
            await adapter.create_checkout(
                dataclasses.replace(kwd, total=12345, tax=1345),
                idempotency_key=str(uuid.uuid4()),
            )

    async def test_capabilities_bound_amounts_in_pago_units(self, adapter: StripeAdapter) -> None:
        caps = adapter.capabilities
        assert {"AUD", "JPY", "KWD"} <= caps.currencies
        assert caps.min_amount["AUD"] == 50
        assert caps.min_amount["JPY"] == 50
        assert caps.max_amount["KWD"] == 99_999_999
        assert caps.countries is None


class TestIdempotency:
    async def test_a_retry_with_the_same_key_is_the_same_checkout(
        self, adapter: StripeAdapter
    ) -> None:
        order, key = seed_order(), str(uuid.uuid4())
        first = await adapter.create_checkout(order, idempotency_key=key)
        again = await adapter.create_checkout(order, idempotency_key=key)
        assert again == first

    async def test_the_same_key_for_another_order_is_rejected(self, adapter: StripeAdapter) -> None:
        key = str(uuid.uuid4())
        await adapter.create_checkout(seed_order(), idempotency_key=key)
        with pytest.raises(ProviderRejected, match="idempotency_error"):
            await adapter.create_checkout(seed_order(), idempotency_key=key)


class TestFailures:
    @pytest.mark.parametrize(
        ("mode", "words"),
        [(FailureMode.SERVER_ERROR, "500 api_error"), (FailureMode.RATE_LIMITED, "429")],
    )
    async def test_5xx_and_429_are_unavailable(
        self, adapter: StripeAdapter, server: CardProviderServer, mode: FailureMode, words: str
    ) -> None:
        server.set_failure("stripe", mode, count=1)
        with pytest.raises(ProviderUnavailable, match=words):
            await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))

    async def test_a_timeout_is_unavailable_and_the_same_key_finds_the_orphan(
        self, adapter: StripeAdapter, server: CardProviderServer
    ) -> None:
        server.set_failure("stripe", FailureMode.TIMEOUT, count=1, timeout_seconds=5)
        order, key = seed_order(), str(uuid.uuid4())
        with pytest.raises(ProviderUnavailable, match="timed out"):
            await adapter.create_checkout(order, idempotency_key=key)

        orphan = await adapter.create_checkout(order, idempotency_key=key)
        await adapter.expire(orphan.reference)
        assert (await adapter.retrieve(orphan.reference)).outcome is CardSessionStatus.EXPIRED

    async def test_nobody_listening_is_unavailable(self) -> None:
        down = StripeAdapter(
            api_key="sk_test_x", webhook_secret="whsec_x",
            base_url=f"http://127.0.0.1:{free_tcp_port()}", timeout=1.0,
        )  # fmt: skip
        try:
            with pytest.raises(ProviderUnavailable):
                await down.create_checkout(seed_order(), idempotency_key="k")
        finally:
            await down.aclose()

    async def test_a_wrong_key_is_rejected(self, server: CardProviderServer) -> None:
        wrong = StripeAdapter(
            api_key="sk_test_wrong", webhook_secret="whsec_x", base_url=server.url("stripe")
        )
        try:
            with pytest.raises(ProviderRejected, match="401"):
                await wrong.create_checkout(seed_order(), idempotency_key="k")
        finally:
            await wrong.aclose()

    async def test_a_currency_the_account_does_not_take_is_rejected_before_any_call(
        self, server: CardProviderServer
    ) -> None:
        server.set_failure("stripe", FailureMode.SERVER_ERROR)  # any call would fail otherwise
        narrow = StripeAdapter(
            api_key=SECRETS["api_key"], webhook_secret="whsec_x",
            base_url=server.url("stripe"), currencies=["AUD"],
        )  # fmt: skip
        try:
            with pytest.raises(ProviderRejected, match="JPY"):
                await narrow.create_checkout(
                    seed_order(currency="JPY", exponent=0, total=1, shipping=0, tax=0,
                               items=[OrderItem("x", None, 1, 1)]),
                    idempotency_key="k",
                )  # fmt: skip
        finally:
            await narrow.aclose()


class TestRetrieveAndExpire:
    async def test_open_then_paid(self, adapter: StripeAdapter, server: CardProviderServer) -> None:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        opened = await adapter.retrieve(checkout.reference)
        assert (opened.raw_status, opened.outcome) == ("open", None)

        await press(server, checkout.reference, "pay")

        paid = await adapter.retrieve(checkout.reference)
        assert (paid.raw_status, paid.outcome) == ("complete", CardSessionStatus.COMPLETED)

    async def test_expire_is_idempotent_but_a_paid_session_stays_paid(
        self, adapter: StripeAdapter, server: CardProviderServer
    ) -> None:
        checkout = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        await adapter.expire(checkout.reference)
        await adapter.expire(checkout.reference)
        assert (await adapter.retrieve(checkout.reference)).outcome is CardSessionStatus.EXPIRED

        paid = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        await press(server, paid.reference, "pay")
        with pytest.raises(ProviderRejected):
            await adapter.expire(paid.reference)

    async def test_an_unknown_session_is_rejected(self, adapter: StripeAdapter) -> None:
        with pytest.raises(ProviderRejected, match="404"):
            await adapter.retrieve("cs_test_unknown")


class TestWebhooks:
    async def test_pay_is_completed_for_the_pago_session(
        self, adapter: StripeAdapter, server: CardProviderServer, receiver: Receiver
    ) -> None:
        order = seed_order()
        checkout = await adapter.create_checkout(order, idempotency_key=str(uuid.uuid4()))
        await press(server, checkout.reference, "pay")
        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 1)
        delivery = receiver.at(WEBHOOKS)[0]

        [note] = await adapter.parse_webhook(headers_of(delivery), delivery.body)

        assert note.provider is CardProvider.STRIPE
        assert note.event_type == "checkout.session.completed"
        assert note.event_id == json.loads(delivery.body)["id"]
        assert (note.reference, note.session_id) == (checkout.reference, order.session_id)
        assert note.outcome is CardSessionStatus.COMPLETED
        assert note.occurred_at is not None
        assert abs(note.occurred_at.timestamp() - time.time()) < 60
        assert adapter.webhook_ack().status_code == 200

    async def test_decline_is_failed_and_expiry_expired(
        self, adapter: StripeAdapter, server: CardProviderServer, receiver: Receiver
    ) -> None:
        declined = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        expired = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        await press(server, declined.reference, "decline")
        await adapter.expire(expired.reference)
        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 3)

        notes = [
            n
            for d in receiver.at(WEBHOOKS)
            for n in await adapter.parse_webhook(headers_of(d), d.body)
        ]

        outcomes = {(n.reference, n.event_type): n.outcome for n in notes}
        assert outcomes == {
            # Completed unpaid moves nothing: the async outcome follows.
            (declined.reference, "checkout.session.completed"): None,
            (declined.reference, "checkout.session.async_payment_failed"): (
                CardSessionStatus.FAILED
            ),
            (expired.reference, "checkout.session.expired"): CardSessionStatus.EXPIRED,
        }

    async def test_the_decline_failure_mode_declines_pay(
        self, adapter: StripeAdapter, server: CardProviderServer, receiver: Receiver
    ) -> None:
        server.set_failure("stripe", FailureMode.DECLINE, count=1)
        checkout = await adapter.create_checkout(seed_order(), idempotency_key=str(uuid.uuid4()))
        await press(server, checkout.reference, "pay")
        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 2)
        outcomes = [
            n.outcome
            for d in receiver.at(WEBHOOKS)
            for n in await adapter.parse_webhook(headers_of(d), d.body)
        ]
        assert CardSessionStatus.FAILED in outcomes
        assert CardSessionStatus.COMPLETED not in outcomes


class TestSignature:
    BODY = json.dumps(
        {"id": "evt_1", "object": "event", "type": "checkout.session.expired", "created": 1,
         "data": {"object": {"id": "cs_test_1", "object": "checkout.session",
                             "status": "expired", "client_reference_id": "s-1"}}}
    ).encode()  # fmt: skip

    def adapter(
        self,
        secret: str | list[str] = "whsec_a",  # noqa: S107 - a test secret
        now: float | None = None,
    ) -> StripeAdapter:
        return StripeAdapter(
            api_key="sk_test_x", webhook_secret=secret,
            clock=(lambda: now) if now is not None else time.time,
        )  # fmt: skip

    async def test_a_good_signature_verifies(self) -> None:
        header = local_stripe.sign("whsec_a", int(time.time()), self.BODY)
        [note] = await self.adapter().parse_webhook({"stripe-signature": header}, self.BODY)
        assert (note.session_id, note.outcome) == ("s-1", CardSessionStatus.EXPIRED)

    async def test_a_tampered_body_or_a_wrong_secret_does_not(self) -> None:
        header = local_stripe.sign("whsec_a", int(time.time()), self.BODY)
        with pytest.raises(InvalidSignature):
            await self.adapter().parse_webhook(
                {"stripe-signature": header}, self.BODY.replace(b"s-1", b"s-2")
            )
        with pytest.raises(InvalidSignature):
            await self.adapter("whsec_b").parse_webhook({"stripe-signature": header}, self.BODY)

    async def test_an_old_timestamp_does_not(self) -> None:
        signed_at = int(time.time())
        header = local_stripe.sign("whsec_a", signed_at, self.BODY)
        late = self.adapter(now=signed_at + 301)
        with pytest.raises(InvalidSignature, match="tolerance"):
            await late.parse_webhook({"stripe-signature": header}, self.BODY)
        in_time = self.adapter(now=signed_at + 299)
        assert await in_time.parse_webhook({"stripe-signature": header}, self.BODY)

    async def test_any_of_several_v1_signatures_and_secrets(self) -> None:
        """While Stripe rolls an endpoint's secret it signs with both: one v1 each."""
        now = int(time.time())
        old = local_stripe.sign("whsec_old", now, self.BODY)
        new = local_stripe.sign("whsec_new", now, self.BODY).split(",")[1]
        header = f"{old},{new},v0=ignored"
        assert await self.adapter("whsec_new").parse_webhook(
            {"stripe-signature": header}, self.BODY
        )
        assert await self.adapter(["whsec_x", "whsec_old"]).parse_webhook(
            {"stripe-signature": header}, self.BODY
        )

    @pytest.mark.parametrize("header", ["", "v1=abc", "t=x,v1=abc", f"t={int(time.time())}"])
    async def test_a_malformed_header_does_not(self, header: str) -> None:
        with pytest.raises(InvalidSignature):
            await self.adapter().parse_webhook({"stripe-signature": header}, self.BODY)

    async def test_an_event_about_something_else_moves_nothing(self) -> None:
        body = json.dumps(
            {"id": "evt_2", "object": "event", "type": "charge.refunded", "created": 1,
             "data": {"object": {"id": "ch_1", "object": "charge"}}}
        ).encode()  # fmt: skip
        header = local_stripe.sign("whsec_a", int(time.time()), body)
        assert await self.adapter().parse_webhook({"stripe-signature": header}, body) == []
