"""The local Stripe against Stripe's published reference, read through Stripe's own library.

``stripe`` (the official Python SDK) encodes the create call, maps answers onto its typed
objects by their ``object`` word, maps errors onto its exception classes by status and
``error.type``, and verifies webhook signatures with ``WebhookSignature.verify_header``: a
maintained implementation of Stripe's scheme is the test vector. Field names and status words
not checked by the SDK are listed from the API reference's ``checkout.session`` object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import stripe

from pago.devstack.cardproviders import stripe as local_stripe
from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.cardproviders.server import DEV_SECRETS, CardProviderServer
from tests.support.cardproviders import provider_server
from tests.support.receiver import Receiver

API_KEY = DEV_SECRETS["stripe"]["api_key"]
WEBHOOK_SECRET = DEV_SECRETS["stripe"]["webhook_secret"]
WEBHOOKS = "/api/v1/webhooks/stripe"

# The checkout.session object's attributes in Stripe's API reference: the fake may leave some
# out, never add one of its own.
SESSION_FIELDS = local_stripe.words(
    """id object adaptive_pricing after_expiration allow_promotion_codes amount_subtotal
    amount_total automatic_tax billing_address_collection cancel_url client_reference_id
    client_secret collected_information consent consent_collection created currency
    currency_conversion custom_fields custom_text customer customer_creation customer_details
    customer_email discounts expires_at invoice invoice_creation line_items livemode locale
    metadata mode payment_intent payment_link payment_method_collection
    payment_method_configuration_details payment_method_options payment_method_types
    payment_status permissions phone_number_collection presentment_details recovered_from
    redirect_on_completion return_url saved_payment_method_options setup_intent
    shipping_address_collection shipping_cost shipping_details shipping_options status
    submit_type subscription success_url tax_id_collection total_details ui_mode url
    wallet_options"""
)
EVENT_FIELDS = local_stripe.words(
    "id object account api_version context created data livemode pending_webhooks request type"
)
SESSION_STATUSES = {"open", "complete", "expired"}
PAYMENT_STATUSES = {"paid", "unpaid", "no_payment_required"}
ERROR_TYPES = {"api_error", "card_error", "idempotency_error", "invalid_request_error"}


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
def client(server: CardProviderServer) -> stripe.StripeClient:
    # No retries: the SDK would retry 429/500 itself and hide what the fake answered.
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": server.url("stripe")}, max_network_retries=0
    )


def create_params(**changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "success_url": "https://merchant.example/success?cs={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://merchant.example/failure",
        "line_items": [
            {
                "price_data": {
                    "currency": "aud",
                    "unit_amount": 11900,
                    "product_data": {"name": "Wireless Headphones"},
                },
                "quantity": 1,
            },
            {
                "price_data": {
                    "currency": "aud",
                    "unit_amount": 1181,
                    "product_data": {"name": "Tax"},
                },
                "quantity": 1,
            },
        ],
        "shipping_options": [
            {
                "shipping_rate_data": {
                    "type": "fixed_amount",
                    "display_name": "Express",
                    "fixed_amount": {"amount": 995, "currency": "aud"},
                }
            }
        ],
        "client_reference_id": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9",
        "customer_email": "jane.smith@example.com",
        "metadata": {"pago_session_id": "e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"},
        "expires_at": int(time.time()) + 3600,
        "locale": "en",
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}  # None: leave the key out


async def press(session_url: str, action: str) -> httpx.Response:
    """What the hosted page's Pay or Decline button submits (its form, without a browser)."""
    async with httpx.AsyncClient() as http:
        return await http.post(session_url, data={"action": action})


class TestCreate:
    def test_the_official_client_gets_a_checkout_session(
        self, client: stripe.StripeClient, server: CardProviderServer
    ) -> None:
        params = create_params()
        session = client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]

        assert isinstance(session, stripe.checkout.Session)  # mapped by its "object" word
        assert session.object == "checkout.session"
        assert session.id.startswith("cs_test_")
        assert session.url is not None
        assert session.url.startswith(f"{server.url('stripe')}/pay/{session.id}")
        assert (session.status, session.payment_status) == ("open", "unpaid")
        assert session.amount_total == 11900 + 1181 + 995
        assert session.amount_subtotal == 11900 + 1181
        assert session.total_details is not None
        assert session.total_details.amount_shipping == 995
        assert session.currency == "aud"
        assert session.client_reference_id == params["client_reference_id"]
        assert session.customer_email == "jane.smith@example.com"
        assert session.metadata is not None
        assert session.metadata.to_dict() == params["metadata"]
        assert session.expires_at == params["expires_at"]
        assert abs(session.created - time.time()) < 60
        assert session.livemode is False
        assert session.mode == "payment"
        assert set(session.to_dict()) <= SESSION_FIELDS

    async def test_the_reference_curl_form_with_basic_auth(
        self, server: CardProviderServer
    ) -> None:
        """The form exactly as the reference's curl sends it (``-u key:``, ``-d a[0][b]=…``)."""
        form = (
            "success_url=https%3A%2F%2Fexample.com%2Fsuccess"
            "&line_items[0][price_data][currency]=USD"
            "&line_items[0][price_data][unit_amount]=1099"
            "&line_items[0][price_data][product_data][name]=T-shirt"
            "&line_items[0][quantity]=2&mode=payment&payment_method_types[]=card"
        )
        async with httpx.AsyncClient(auth=(API_KEY, "")) as http:
            response = await http.post(
                f"{server.url('stripe')}/v1/checkout/sessions",
                content=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["amount_total"] == 2198
        assert body["currency"] == "usd"  # Stripe answers in lower case
        assert body["payment_method_types"] == ["card"]
        assert body["status"] in SESSION_STATUSES
        assert body["payment_status"] in PAYMENT_STATUSES
        assert response.headers["request-id"].startswith("req_")

    def test_retrieve_and_expire(self, client: stripe.StripeClient) -> None:
        created = client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert client.v1.checkout.sessions.retrieve(created.id).status == "open"

        expired = client.v1.checkout.sessions.expire(created.id)

        assert (expired.status, expired.url) == ("expired", None)
        with pytest.raises(stripe.InvalidRequestError) as again:
            client.v1.checkout.sessions.expire(created.id)
        assert again.value.http_status == 400

    def test_three_decimal_amounts_end_in_zero(self, client: stripe.StripeClient) -> None:
        item = {
            "price_data": {"currency": "kwd", "unit_amount": 5124, "product_data": {"name": "A"}},
            "quantity": 1,
        }
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.checkout.sessions.create(
                params=create_params(line_items=[item], shipping_options=None)  # type: ignore[arg-type]
            )
        assert raised.value.param == "line_items[0][price_data][unit_amount]"

        item["price_data"]["unit_amount"] = 5120  # type: ignore[index]
        session = client.v1.checkout.sessions.create(
            params=create_params(line_items=[item], shipping_options=None)  # type: ignore[arg-type]
        )
        assert (session.currency, session.amount_total) == ("kwd", 5120)


class TestErrors:
    """Each answer raises the SDK's class for it, so its status and ``error.type`` are right."""

    def test_no_key_and_a_wrong_key(self, server: CardProviderServer) -> None:
        wrong = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": server.url("stripe")}, max_network_retries=0
        )
        with pytest.raises(stripe.AuthenticationError) as raised:
            wrong.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert raised.value.http_status == 401
        assert raised.value.error is not None
        assert raised.value.error.type == "invalid_request_error"

    def test_a_missing_parameter_names_it(self, client: stripe.StripeClient) -> None:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.checkout.sessions.create(params=create_params(mode=None))  # type: ignore[arg-type]
        assert raised.value.http_status == 400
        assert (raised.value.code, raised.value.param) == ("parameter_missing", "mode")

    def test_an_unknown_parameter_is_refused(self, client: stripe.StripeClient) -> None:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.checkout.sessions.create(params=create_params(amount=5))  # type: ignore[arg-type]
        assert raised.value.param == "amount"

    def test_rate_limited_and_server_error(
        self, client: stripe.StripeClient, server: CardProviderServer
    ) -> None:
        server.set_failure("stripe", FailureMode.RATE_LIMITED, count=1)
        with pytest.raises(stripe.RateLimitError) as limited:
            client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert limited.value.http_status == 429
        assert limited.value.error is not None
        assert limited.value.error.code == "rate_limit"

        server.set_failure("stripe", FailureMode.SERVER_ERROR, count=1)
        with pytest.raises(stripe.APIError) as failed:
            client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert failed.value.http_status == 500
        assert failed.value.error is not None
        assert failed.value.error.type == "api_error"

        # Back to normal once the counted failures are spent.
        assert client.v1.checkout.sessions.create(params=create_params()).status == "open"  # type: ignore[arg-type]

    async def test_every_error_has_the_error_object_shape(self, server: CardProviderServer) -> None:
        url = f"{server.url('stripe')}/v1/checkout/sessions"
        async with httpx.AsyncClient() as http:
            answers = [
                await http.post(url, data={"mode": "payment"}),
                await http.post(url, data={"mode": "payment"}, headers=_auth()),
                await http.get(f"{url}/cs_test_nope", headers=_auth()),
            ]
        assert [a.status_code for a in answers] == [401, 400, 404]
        for answer in answers:
            error = answer.json()["error"]
            assert error["type"] in ERROR_TYPES
            assert isinstance(error["message"], str)
            assert set(error) <= {"type", "code", "decline_code", "message", "param", "doc_url"}


class TestIdempotency:
    def test_same_key_same_parameters_is_the_same_session(
        self, client: stripe.StripeClient
    ) -> None:
        params = create_params()
        first = client.v1.checkout.sessions.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": "order-1-attempt-1"},
        )
        again = client.v1.checkout.sessions.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": "order-1-attempt-1"},
        )
        assert again.id == first.id
        assert again.last_response is not None
        assert again.last_response.headers["idempotent-replayed"] == "true"

    def test_same_key_other_parameters_is_an_idempotency_error(
        self, client: stripe.StripeClient
    ) -> None:
        client.v1.checkout.sessions.create(
            params=create_params(),  # type: ignore[arg-type]
            options={"idempotency_key": "order-2"},
        )
        with pytest.raises(stripe.IdempotencyError) as raised:
            client.v1.checkout.sessions.create(
                params=create_params(client_reference_id="other"),  # type: ignore[arg-type]
                options={"idempotency_key": "order-2"},
            )
        assert raised.value.http_status == 400

    def test_a_key_longer_than_255_characters_is_refused(self, client: stripe.StripeClient) -> None:
        ok = client.v1.checkout.sessions.create(
            params=create_params(),  # type: ignore[arg-type]
            options={"idempotency_key": "k" * 255},
        )
        assert ok.status == "open"
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.checkout.sessions.create(
                params=create_params(),  # type: ignore[arg-type]
                options={"idempotency_key": "k" * 256},
            )


class TestWebhooks:
    def test_the_signature_scheme_matches_the_official_library(self) -> None:
        payload = '{"id": "evt_test", "object": "event"}'
        official = stripe.WebhookSignature.generate_signature_header(
            payload, WEBHOOK_SECRET, timestamp=1_700_000_000
        )
        assert local_stripe.sign(WEBHOOK_SECRET, 1_700_000_000, payload.encode()) == official

    async def test_pay_sends_a_signed_completed_event(
        self, client: stripe.StripeClient, receiver: Receiver
    ) -> None:
        session = client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert session.url is not None

        answer = await press(session.url, "pay")

        assert answer.status_code == 303
        assert answer.headers["location"] == f"https://merchant.example/success?cs={session.id}"
        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 1)
        delivery = receiver.at(WEBHOOKS)[0]
        event = stripe.Webhook.construct_event(
            delivery.body.decode(), delivery.headers["stripe-signature"], WEBHOOK_SECRET
        )
        assert isinstance(event, stripe.Event)
        assert event.type == "checkout.session.completed"
        assert event.id.startswith("evt_")
        assert set(event.to_dict()) <= EVENT_FIELDS
        assert event.livemode is False
        assert isinstance(event.api_version, str)
        paid = event.data.object
        assert isinstance(paid, stripe.checkout.Session)
        assert (paid.id, paid.status, paid.payment_status) == (session.id, "complete", "paid")
        assert set(paid.to_dict()) <= SESSION_FIELDS

        with pytest.raises(stripe.SignatureVerificationError):
            stripe.WebhookSignature.verify_header(
                delivery.body.replace(b"paid", b"PAID"),
                delivery.headers["stripe-signature"],
                WEBHOOK_SECRET,
                tolerance=300,
            )

    async def test_decline_and_expiry_send_their_events(
        self, client: stripe.StripeClient, receiver: Receiver
    ) -> None:
        declined = client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        expiring = client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        assert declined.url is not None

        answer = await press(declined.url, "decline")
        client.v1.checkout.sessions.expire(expiring.id)

        assert answer.headers["location"] == "https://merchant.example/failure"
        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 3)
        events = [
            stripe.Webhook.construct_event(
                d.body.decode(), d.headers["stripe-signature"], WEBHOOK_SECRET
            )
            for d in receiver.at(WEBHOOKS)
        ]
        by_session = sorted((e.data.object.id == expiring.id, e.type) for e in events)
        assert by_session == [
            (False, "checkout.session.async_payment_failed"),
            (False, "checkout.session.completed"),
            (True, "checkout.session.expired"),
        ]
        failed = next(e for e in events if e.type == "checkout.session.async_payment_failed")
        assert failed.data.object.payment_status == "unpaid"

    async def test_a_failing_endpoint_is_retried(
        self, client: stripe.StripeClient, receiver: Receiver
    ) -> None:
        from tests.support.receiver import Reply

        receiver.script(WEBHOOKS, Reply(status=500), Reply(status=500))
        session = client.v1.checkout.sessions.create(params=create_params())  # type: ignore[arg-type]
        client.v1.checkout.sessions.expire(session.id)

        await receiver.wait_for(lambda r: len(r.at(WEBHOOKS)) == 3)
        bodies = {d.body for d in receiver.at(WEBHOOKS)}
        assert len(bodies) == 1  # the same event each time, signed anew
        for delivery in receiver.at(WEBHOOKS):
            stripe.WebhookSignature.verify_header(
                delivery.body, delivery.headers["stripe-signature"], WEBHOOK_SECRET, 300
            )


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
