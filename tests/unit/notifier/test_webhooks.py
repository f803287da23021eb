"""Which session event is which webhook, and the body that is signed."""

from __future__ import annotations

import json

import pytest

from pago.common.enums import SessionStatus as S
from pago.common.enums import WebhookEventType as W
from pago.notifier.webhooks import session_payload, webhook_event_type
from tests.support.notifier import created, detected, resolved, reverted, updated

MERCHANT = "mer_1"


@pytest.mark.parametrize(
    ("status", "previous", "expected"),
    [
        (S.PAID, S.PENDING, W.SESSION_COMPLETED),
        (S.OVERPAID, S.PENDING, W.SESSION_COMPLETED),
        (S.PAID, S.UNDERPAID, W.SESSION_COMPLETED),
        (S.PAID, S.EXPIRED, W.SESSION_COMPLETED),  # a late payment accepted
        (S.OVERPAID, S.PAID, None),  # completed once only
        (S.PAID, S.PAID, None),  # confirmations ticking
        (S.EXPIRED, S.PENDING, W.SESSION_EXPIRED),
        (S.EXPIRED, S.UNDERPAID, W.SESSION_EXPIRED),
        (S.EXPIRED, S.EXPIRED, None),
        (S.BLOCKED, S.PENDING, W.SESSION_BLOCKED),
        (S.UNDERPAID, S.PENDING, W.SESSION_UNDERPAID),
        (S.UNDERPAID, S.UNDERPAID, None),
        (S.PENDING, S.PENDING, None),
        (S.PAID, None, W.SESSION_COMPLETED),
    ],
)
def test_session_updated(status: S, previous: S | None, expected: W | None) -> None:
    assert webhook_event_type(updated(MERCHANT, status, previous)) == expected


def test_other_events() -> None:
    assert webhook_event_type(created(MERCHANT)) is None
    assert webhook_event_type(detected(MERCHANT)) == W.SESSION_PAYMENT_DETECTED
    assert webhook_event_type(resolved(MERCHANT)) == W.SESSION_RESOLVED
    assert webhook_event_type(reverted(MERCHANT)) == W.SESSION_PAYMENT_REVERTED


def test_a_reverted_payment_carries_the_session_object() -> None:
    event = reverted(MERCHANT)
    parsed = json.loads(session_payload(event, W.SESSION_PAYMENT_REVERTED))
    assert parsed["event_type"] == "session.payment_reverted"
    assert parsed["id"] == event.event_id
    assert parsed["data"] == {"object": "checkout_session", **event.session.model_dump(mode="json")}


def test_payload_is_the_ironixpay_envelope_around_the_session_object() -> None:
    event = updated(MERCHANT, S.PAID)
    body = session_payload(event, W.SESSION_COMPLETED)
    parsed = json.loads(body)
    assert body == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    assert list(parsed) == ["id", "event_type", "created", "data"]
    assert parsed["id"] == event.event_id
    assert parsed["event_type"] == "session.completed"
    assert parsed["created"] == int(event.occurred_at.timestamp())
    assert parsed["data"]["object"] == "checkout_session"
    assert parsed["data"]["id"] == event.session_id
    assert parsed["data"]["amount_received"] == "10.5"
    assert parsed["data"]["created_at"].endswith("Z")
    assert parsed["data"]["merchant_name"] == "Acme Shop — café"
