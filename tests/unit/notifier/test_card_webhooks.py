"""Which card session event is which webhook, and the body that is signed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pago.common.enums import CardSessionStatus as S
from pago.common.enums import WebhookEventType as W
from pago.common.events import CardAmountSnapshot, CardSessionEventType
from pago.common.money import to_decimal
from pago.notifier.webhooks import card_session_payload, card_webhook_event_type, minor_units_text
from tests.support.notifier import card_event

MERCHANT = "mer_1"


@pytest.mark.parametrize(
    ("kind", "previous", "expected"),
    [
        ("card_session.completed", S.PENDING, W.CARD_SESSION_COMPLETED),
        ("card_session.failed", S.PENDING, W.CARD_SESSION_FAILED),
        ("card_session.expired", S.PENDING, W.CARD_SESSION_EXPIRED),
        ("card_session.cancelled", S.PENDING, W.CARD_SESSION_CANCELLED),
        ("card_session.created", None, W.CARD_SESSION_CREATED),
        ("card_session.completed", None, W.CARD_SESSION_COMPLETED),
        ("card_session.completed", S.COMPLETED, None),  # not a change: no second completion
        ("card_session.expired", S.EXPIRED, None),
    ],
)
def test_each_event_is_the_webhook_of_its_type(
    kind: CardSessionEventType, previous: S | None, expected: W | None
) -> None:
    assert card_webhook_event_type(card_event(MERCHANT, kind, previous=previous)) == expected


def test_the_body_is_the_envelope_around_the_card_session_in_camel_case() -> None:
    event = card_event(MERCHANT, "card_session.completed")
    body = card_session_payload(event, W.CARD_SESSION_COMPLETED)
    parsed = json.loads(body, parse_float=Decimal)
    assert body == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    assert list(parsed) == ["id", "event_type", "created", "data"]
    assert parsed["id"] == event.event_id
    assert parsed["event_type"] == "card_session.completed"
    assert parsed["created"] == int(event.occurred_at.timestamp())
    session = event.session
    assert parsed["data"] == {
        "object": "card_session",
        "sessionId": event.session_id,
        "orderReference": "ORD-2024-001",
        "status": "COMPLETED",
        "amount": {"currency": "AUD", "total": "140.76", "shipping": "9.95", "tax": "11.81"},
        "provider": "stripe",
        "providerReference": session.provider_reference,
        "checkoutUrl": "https://checkout.stripe.com/pay/cs_test_123",
        "expiresAt": session.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "createdAt": session.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updatedAt": session.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_a_session_without_a_live_attempt_shows_nulls() -> None:
    event = card_event(MERCHANT, "card_session.failed")
    event = event.model_copy(
        update={
            "session": event.session.model_copy(
                update={"provider": None, "provider_reference": None, "checkout_url": None}
            )
        }
    )
    data = json.loads(card_session_payload(event, W.CARD_SESSION_FAILED))["data"]
    assert (data["provider"], data["providerReference"], data["checkoutUrl"]) == (None, None, None)


@pytest.mark.parametrize(
    ("currency", "exponent", "units", "text"),
    [
        ("AUD", 2, 14076, "140.76"),
        ("AUD", 2, 11900, "119.00"),
        ("AUD", 2, 5, "0.05"),
        ("AUD", 2, 0, "0.00"),
        ("JPY", 0, 1400, "1400"),
        ("KWD", 3, 1250, "1.250"),
        ("KWD", 3, 7, "0.007"),
    ],
)
def test_amounts_show_every_minor_digit_of_the_currency(
    currency: str, exponent: int, units: int, text: str
) -> None:
    amount = CardAmountSnapshot(
        currency=currency, exponent=exponent, total=units, shipping=0, tax=units
    )
    event = card_event(MERCHANT, amount=amount)
    data = json.loads(card_session_payload(event, W.CARD_SESSION_COMPLETED))["data"]
    assert (data["amount"]["total"], data["amount"]["tax"]) == (text, text)
    assert data["amount"]["currency"] == currency


@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=0, max_value=4))
def test_minor_units_text_is_exact(units: int, exponent: int) -> None:
    text = minor_units_text(units, exponent)
    assert Decimal(text) == to_decimal(units, exponent)  # a 78-digit context: exact
    assert len(text.partition(".")[2]) == exponent
