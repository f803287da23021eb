"""An approved PayPal order is always captured, and a lost webhook is healed: the webhook's
follow-up answers 503 until it succeeds (the provider delivers again), and the reconciliation
pass asks the live provider about the PENDING sessions the webhooks left unsettled."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import card_sessions
from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.cardproviders.paypal import WEBHOOK_ATTEMPTS
from tests.component.api.cards.support import CardClient, CardStack
from tests.component.api.cards.test_webhooks import (
    create_at,
    finish,
    session_events,
    status_of,
    wait_status,
)

APPROVED = "CHECKOUT.ORDER.APPROVED"
CAPTURED = "PAYMENT.CAPTURE.COMPLETED"


def order_of(created: dict[str, Any]) -> str:
    token: str = parse_qs(urlsplit(created["checkoutUrl"]).query)["token"][0]
    return token


async def paypal_events(stack: CardStack, order_id: str) -> list[dict[str, Any]]:
    """The local PayPal's webhooks about ``order_id``, each with its delivery statuses."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{stack.providers.url('paypal')}/_events")
    assert response.status_code == 200, response.text
    found = []
    for sent in response.json():
        resource = sent["event"]["resource"]
        related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
        if order_id in (resource.get("id"), related.get("order_id")):
            found.append(sent)
    return found


async def wait_deliveries(stack: CardStack, order_id: str, event_type: str, done: Any) -> list[int]:
    """The delivery statuses of ``order_id``'s ``event_type`` webhook once ``done(them)``."""
    deadline = time.monotonic() + 20
    while True:
        sent = [
            e
            for e in await paypal_events(stack, order_id)
            if e["event"]["event_type"] == event_type
        ]
        deliveries: list[int] = sent[0]["deliveries"] if sent else []
        if done(deliveries):
            return deliveries
        assert time.monotonic() < deadline, f"{event_type} deliveries {deliveries}"
        await asyncio.sleep(0.05)  # the local PayPal is still delivering: look again shortly


async def captures(stack: CardStack, order_id: str) -> int:
    """Captures PayPal made of ``order_id`` (each sends exactly one PAYMENT.CAPTURE.* event)."""
    return sum(
        e["event"]["event_type"].startswith("PAYMENT.CAPTURE.")
        for e in await paypal_events(stack, order_id)
    )


async def backdate(db: AsyncEngine, session_id: str, minutes: int) -> None:
    """As if the session had been created ``minutes`` ago (past the reconciliation's delay)."""
    async with db.begin() as conn:
        await conn.execute(
            update(card_sessions)
            .where(card_sessions.c.id == session_id)
            .values(created_at=text(f"now() - interval '{minutes} minutes'"))
        )


async def inbox_types(db: AsyncEngine, session_id: str) -> list[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_type FROM card_webhook_inbox WHERE session_id = :s"
                " ORDER BY received_at, event_type"
            ),
            {"s": session_id},
        )
        return [row[0] for row in rows]


def cards(stack: CardStack) -> Any:
    service = stack.app.state.pago.cards
    assert service is not None
    return service


async def test_a_failed_capture_answers_503_and_the_redelivery_captures(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = await create_at(stack, card_client, "paypal")
    order_id = order_of(created)
    stack.providers.set_failure("paypal", FailureMode.SERVER_ERROR, count=1, call="capture")

    await finish(stack, "paypal", created["checkoutUrl"], "pay")

    await wait_status(stack, card_client, created["sessionId"], "COMPLETED")
    # The first delivery's capture got PayPal's 500: answered 503, so PayPal came back, and the
    # redelivery (a duplicate in the inbox) captured.
    assert await wait_deliveries(stack, order_id, APPROVED, lambda d: len(d) >= 2) == [503, 200]
    assert await wait_deliveries(stack, order_id, CAPTURED, lambda d: 200 in d) == [200]
    assert await captures(stack, order_id) == 1
    assert await session_events(db, created["sessionId"]) == [
        "card_session.created",
        "card_session.completed",
    ]


async def test_the_reconciliation_pass_captures_what_no_webhook_came_back_for(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = await create_at(stack, card_client, "paypal")
    session_id, order_id = created["sessionId"], order_of(created)
    stack.providers.set_failure("paypal", FailureMode.SERVER_ERROR, call="capture")
    await finish(stack, "paypal", created["checkoutUrl"], "pay")
    # Every delivery of the approval failed its capture: PayPal has given up on it.
    deliveries = await wait_deliveries(
        stack, order_id, APPROVED, lambda d: len(d) == WEBHOOK_ATTEMPTS
    )
    assert deliveries == [503] * WEBHOOK_ATTEMPTS
    assert await captures(stack, order_id) == 0
    stack.providers.set_failure("paypal", FailureMode.OK, call="capture")
    assert await cards(stack).reconcile() == 0  # too young: left to its webhooks
    await backdate(db, session_id, 5)

    assert await cards(stack).reconcile() == 1

    assert await status_of(stack, card_client, session_id) == "COMPLETED"
    # The capture's own webhook arrives as well, and moves nothing more.
    assert await wait_deliveries(stack, order_id, CAPTURED, lambda d: 200 in d) == [200]
    assert await captures(stack, order_id) == 1
    assert await session_events(db, session_id) == [
        "card_session.created",
        "card_session.completed",
    ]
    assert "reconcile:COMPLETED" in await inbox_types(db, session_id)
    assert await cards(stack).reconcile() == 0  # nothing PENDING is left


@pytest.mark.parametrize("provider", ["stripe", "adyen"])
async def test_the_reconciliation_pass_heals_a_lost_webhook(
    stack: CardStack, db: AsyncEngine, card_client: CardClient, provider: str
) -> None:
    created = await create_at(stack, card_client, provider)
    session_id = created["sessionId"]
    ctx = stack.providers.contexts[provider]
    webhook_url, ctx.webhook_url = ctx.webhook_url, None  # its webhooks are lost
    try:
        await finish(stack, provider, created["checkoutUrl"], "pay")
    finally:
        ctx.webhook_url = webhook_url
    assert await status_of(stack, card_client, session_id) == "PENDING"
    await backdate(db, session_id, 5)

    assert await cards(stack).reconcile() == 1

    assert await status_of(stack, card_client, session_id) == "COMPLETED"
    assert await session_events(db, session_id) == [
        "card_session.created",
        "card_session.completed",
    ]
    async with db.connect() as conn:
        next_check = await conn.scalar(
            select(card_sessions.c.reconcile_at).where(card_sessions.c.id == session_id)
        )
    assert next_check is not None


async def test_an_unfinished_session_is_asked_again_only_after_its_gap(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = await create_at(stack, card_client, "stripe")
    session_id = created["sessionId"]
    await backdate(db, session_id, 5)
    before = stack.counter.calls.total()

    assert await cards(stack).reconcile() == 0  # asked: the payer has not paid yet
    asked = stack.counter.calls.total() - before
    assert await cards(stack).reconcile() == 0  # not due again for minutes

    assert asked == 1
    assert stack.counter.calls.total() - before == 1
    assert await status_of(stack, card_client, session_id) == "PENDING"
