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
"""

from __future__ import annotations

import json
from typing import Any

from pago.common.enums import SessionStatus, WebhookEventType
from pago.common.events import (
    AnySessionEvent,
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
