"""Fan-out: the webhook deliveries a batch of session events creates (never commits).

One delivery per (subscribed endpoint, event). An endpoint receives only events of its own
merchant and mode, only the types it enabled, and only events that happened after it was
created: replaying ``checkout.sessions`` (a new consumer group, an offset reset) must not
flood a new endpoint with history. Duplicates — the same event read twice — are absorbed by
the ``(endpoint_id, event_id)`` unique constraint, so fan-out is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.enums import WebhookEventType
from pago.common.events import AnySessionEvent
from pago.notifier import repository
from pago.notifier.repository import NewDelivery
from pago.notifier.webhooks import session_payload, webhook_event_type


@dataclass(frozen=True, slots=True)
class FanOut:
    events: int
    """Session events in the batch that are webhooks (of any subscribed type or not)."""
    deliveries: int
    """Deliveries newly queued (duplicates of earlier fan-outs not counted)."""


async def fan_out(conn: AsyncConnection, batch: Sequence[AnySessionEvent]) -> FanOut:
    webhooks: list[tuple[AnySessionEvent, WebhookEventType]] = []
    for event in batch:
        kind = webhook_event_type(event)
        if kind is not None:
            webhooks.append((event, kind))
    if not webhooks:
        return FanOut(0, 0)
    endpoints = await repository.subscribers(
        conn, {(event.merchant_id, event.mode) for event, _ in webhooks}
    )
    by_owner: dict[tuple[str, str], list[repository.Subscriber]] = {}
    for endpoint in endpoints:
        by_owner.setdefault((endpoint.merchant_id, endpoint.mode.value), []).append(endpoint)
    rows: list[NewDelivery] = []
    for event, kind in webhooks:
        payload: bytes | None = None
        for endpoint in by_owner.get((event.merchant_id, event.mode.value), ()):
            if kind.value not in endpoint.enabled_events or endpoint.created_at > event.occurred_at:
                continue
            payload = payload or session_payload(event, kind)
            rows.append(NewDelivery(endpoint.id, event.event_id, kind.value, payload))
    created = await repository.insert_deliveries(conn, rows) if rows else 0
    return FanOut(len(webhooks), created)
