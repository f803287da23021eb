"""Which webhook a session event is, and the exact body that is signed (pure).

Mapping (one Kafka event is at most one webhook event, under the Kafka event's own ``evt_…``
id, so every redelivery of it — from Kafka or from the retry schedule — carries the same id):

- ``session.updated`` into ``Paid`` or ``Overpaid`` from any other status → ``session.completed``
  (``Paid`` → ``Overpaid`` is not a second completion);
- ``session.updated`` into ``Expired`` / ``Blocked`` → ``session.expired`` / ``session.blocked``;
- ``session.updated`` into ``Underpaid`` from another status → ``session.underpaid`` (opt-in);
- ``session.payment_detected`` → ``session.payment_detected`` (opt-in);
- ``session.payment_reverted`` → ``session.payment_reverted`` (opt-in): a credited transfer was
  reverted by a reorg deeper than the confirmation depth;
- ``session.resolved`` → ``session.resolved``;
- ``session.created`` and every other update (confirmations, a second partial payment) → none.

Card sessions (``card.sessions``): each ``CardSessionEvent`` is the webhook of its own ``type``
(``card_session.completed``, ``.failed``, ``.expired``; ``.created`` and ``.cancelled`` too, but
no endpoint receives those unless it listed them), except an event whose ``previous_status`` is
already its status — not a change, so no webhook.
"""

from __future__ import annotations

import json
from typing import Any

from pago.common.enums import SessionStatus, WebhookEventType
from pago.common.events import (
    AnySessionEvent,
    CardAmountSnapshot,
    CardSessionEvent,
    SessionPaymentDetected,
    SessionPaymentReverted,
    SessionResolved,
    SessionUpdated,
)

_COMPLETED = (SessionStatus.PAID, SessionStatus.OVERPAID)
_ON_ENTRY: dict[SessionStatus, WebhookEventType] = {
    SessionStatus.EXPIRED: WebhookEventType.SESSION_EXPIRED,
    SessionStatus.BLOCKED: WebhookEventType.SESSION_BLOCKED,
    SessionStatus.UNDERPAID: WebhookEventType.SESSION_UNDERPAID,
}


def webhook_event_type(event: AnySessionEvent) -> WebhookEventType | None:
    """The webhook ``event`` raises, or ``None`` (see the module docstring)."""
    match event:
        case SessionUpdated(session=session, previous_status=previous):
            status = session.status
            if status in _COMPLETED:
                return WebhookEventType.SESSION_COMPLETED if previous not in _COMPLETED else None
            entered = _ON_ENTRY.get(status)
            return entered if entered is not None and previous is not status else None
        case SessionPaymentDetected():
            return WebhookEventType.SESSION_PAYMENT_DETECTED
        case SessionPaymentReverted():
            return WebhookEventType.SESSION_PAYMENT_REVERTED
        case SessionResolved():
            return WebhookEventType.SESSION_RESOLVED
        case _:
            return None


def encode(envelope: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the bytes stored, signed and sent, never re-serialized after."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def session_payload(event: AnySessionEvent, event_type: WebhookEventType) -> bytes:
    """``{"id", "event_type", "created", "data": {"object": "checkout_session", …}}``.

    ``created`` is when the change happened (unix seconds), not when it was sent; ``data`` is
    the session object exactly as ``GET /v1/checkout/sessions/{id}`` shows it.
    """
    return encode(
        {
            "id": event.event_id,
            "event_type": event_type.value,
            "created": int(event.occurred_at.timestamp()),
            "data": {"object": "checkout_session", **event.session.model_dump(mode="json")},
        }
    )


def card_webhook_event_type(event: CardSessionEvent) -> WebhookEventType | None:
    """The webhook a card session event raises, or ``None`` (see the module docstring)."""
    if event.previous_status is not None and event.previous_status is event.session.status:
        return None
    return WebhookEventType(event.type)


def minor_units_text(units: int, exponent: int) -> str:
    """``units`` of a currency with ``exponent`` minor digits as a decimal string showing all of
    them (AUD 14076 → ``"140.76"``, JPY 1400 → ``"1400"``, KWD 1250 → ``"1.250"``): integer
    arithmetic only, never a float."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**exponent)
    return f"{sign}{whole}" if exponent == 0 else f"{sign}{whole}.{frac:0{exponent}d}"


def _card_amount(amount: CardAmountSnapshot) -> dict[str, str]:
    return {
        "currency": amount.currency,
        "total": minor_units_text(amount.total, amount.exponent),
        "shipping": minor_units_text(amount.shipping, amount.exponent),
        "tax": minor_units_text(amount.tax, amount.exponent),
    }


def card_session_payload(event: CardSessionEvent, event_type: WebhookEventType) -> bytes:
    """``{"id", "event_type", "created", "data": {"object": "card_session", …}}``.

    ``data`` is the card session in the card API's camelCase (``sessionId``, ``orderReference``,
    …), its amounts as decimal strings with the currency's exponent, times RFC 3339 UTC as in
    every other webhook; ``created`` is when the change happened (unix seconds).
    """
    session = event.session.model_dump(mode="json")
    return encode(
        {
            "id": event.event_id,
            "event_type": event_type.value,
            "created": int(event.occurred_at.timestamp()),
            "data": {
                "object": "card_session",
                "sessionId": session["session_id"],
                "orderReference": session["order_reference"],
                "status": session["status"],
                "amount": _card_amount(event.session.amount),
                "provider": session["provider"],
                "providerReference": session["provider_reference"],
                "checkoutUrl": session["checkout_url"],
                "expiresAt": session["expires_at"],
                "createdAt": session["created_at"],
                "updatedAt": session["updated_at"],
            },
        }
    )
