"""Fan-out: the webhook deliveries a batch of events creates (never commits).

One delivery per (subscribed endpoint, event). An endpoint receives only events of its own
merchant and mode, only the types it enabled, and only events that happened after it was
created: replaying ``checkout.sessions`` or ``card.sessions`` (a new consumer group, an offset
reset) must not flood a new endpoint with history. Duplicates — the same event read twice — are
absorbed by the ``(endpoint_id, event_id)`` unique constraint, so fan-out is idempotent.
Checkout and card session events differ only in which webhook they are and its body
(``webhooks``); the rest is ``_queue``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.enums import Mode, WebhookEventType
from pago.common.events import AnySessionEvent, CardSessionEvent
from pago.notifier import repository
from pago.notifier.repository import NewDelivery
from pago.notifier.webhooks import (
    card_session_payload,
    card_webhook_event_type,
    session_payload,
    webhook_event_type,
)


@dataclass(frozen=True, slots=True)
class FanOut:
    events: int
    """Events in the batch that are webhooks (of any subscribed type or not)."""
    deliveries: int
    """Deliveries newly queued (duplicates of earlier fan-outs not counted)."""


@dataclass(frozen=True, slots=True)
class _Webhook:
    event_id: str
    merchant_id: str
    mode: Mode
    occurred_at: datetime
    kind: WebhookEventType
    body: Callable[[], bytes]
    """Built once, and only if some endpoint receives it."""


async def fan_out(conn: AsyncConnection, batch: Sequence[AnySessionEvent]) -> FanOut:
    """``checkout.sessions`` events."""
    webhooks: list[_Webhook] = []
    for event in batch:
        kind = webhook_event_type(event)
        if kind is not None:
            webhooks.append(
                _Webhook(
                    event.event_id,
                    event.merchant_id,
                    event.mode,
                    event.occurred_at,
                    kind,
                    partial(session_payload, event, kind),
                )
            )
    return await _queue(conn, webhooks)


async def fan_out_cards(conn: AsyncConnection, batch: Sequence[CardSessionEvent]) -> FanOut:
    """``card.sessions`` events."""
    webhooks: list[_Webhook] = []
    for event in batch:
        kind = card_webhook_event_type(event)
        if kind is not None:
            webhooks.append(
                _Webhook(
                    event.event_id,
                    event.merchant_id,
                    event.mode,
                    event.occurred_at,
                    kind,
                    partial(card_session_payload, event, kind),
                )
            )
    return await _queue(conn, webhooks)


async def _queue(conn: AsyncConnection, webhooks: Sequence[_Webhook]) -> FanOut:
    if not webhooks:
        return FanOut(0, 0)
    endpoints = await repository.subscribers(conn, {(w.merchant_id, w.mode) for w in webhooks})
    by_owner: dict[tuple[str, str], list[repository.Subscriber]] = {}
    for endpoint in endpoints:
        by_owner.setdefault((endpoint.merchant_id, endpoint.mode.value), []).append(endpoint)
    rows: list[NewDelivery] = []
    for webhook in webhooks:
        payload: bytes | None = None
        for endpoint in by_owner.get((webhook.merchant_id, webhook.mode.value), ()):
            if (
                webhook.kind.value not in endpoint.enabled_events
                or endpoint.created_at > webhook.occurred_at
            ):
                continue
            payload = payload or webhook.body()
            rows.append(NewDelivery(endpoint.id, webhook.event_id, webhook.kind.value, payload))
    created = await repository.insert_deliveries(conn, rows) if rows else 0
    return FanOut(len(webhooks), created)
