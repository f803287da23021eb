"""Provider webhooks move card sessions: Pay on the provider's hosted page (POSTed as a browser
would) → the provider's signed webhook to the api over HTTP → status and outbox events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common import topics
from pago.common.db.schema import card_sessions, outbox
from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.cardproviders.stripe import sign
from tests.component.api.cards.support import SEED_RAW, CardClient, CardStack

SESSIONS = "/api/v1/sessions"


async def create_at(stack: CardStack, client: CardClient, provider: str) -> dict[str, Any]:
    """A session whose checkout is at ``provider``: every other provider fails its next create
    (failover reaches ``provider`` wherever it ranks)."""
    for name in stack.providers.contexts:
        if name != provider:
            stack.providers.set_failure(name, FailureMode.SERVER_ERROR, count=1)
    response = await stack.http.post(
        SESSIONS, content=SEED_RAW, headers=client.headers(str(uuid.uuid4()))
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["routing"]["selectedProvider"] == provider
    for name in stack.providers.contexts:
        stack.providers.set_failure(name, FailureMode.OK)
    return body


async def finish(stack: CardStack, provider: str, checkout_url: str, action: str) -> None:
    """What the payer's browser POSTs on the hosted page (Pay or Decline)."""
    async with httpx.AsyncClient(timeout=10) as browser:
        if provider == "paypal":
            order_id = parse_qs(urlsplit(checkout_url).query)["token"][0]
            verb = "approve" if action == "pay" else "decline"
            url = f"{stack.providers.url('paypal')}/checkoutnow/{order_id}/{verb}"
            response = await browser.post(url)
        else:
            response = await browser.post(checkout_url, data={"action": action})
    assert response.status_code in (200, 303), response.text


async def status_of(stack: CardStack, client: CardClient, session_id: str) -> str:
    response = await stack.http.get(f"{SESSIONS}/{session_id}", headers=client.headers())
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def wait_status(stack: CardStack, client: CardClient, session_id: str, want: str) -> None:
    seen: list[str] = []

    async def probe() -> bool:
        seen.append(await status_of(stack, client, session_id))
        return seen[-1] == want

    deadline = time.monotonic() + 20
    while not await probe():
        assert time.monotonic() < deadline, f"status {seen[-1]}, wanted {want}"
        await asyncio.sleep(0.05)  # the webhook is on its way: read again shortly


async def session_events(db: AsyncEngine, session_id: str) -> list[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == topics.CARD_SESSIONS, outbox.c.key == session_id)
            .order_by(outbox.c.id)
        )
        return [json.loads(value)["type"] for (value,) in rows]


async def inbox_count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM card_webhook_inbox")) or 0)


@pytest.mark.parametrize("provider", ["stripe", "adyen", "paypal"])
async def test_pay_completes_the_session_and_enqueues_card_session_completed(
    stack: CardStack, db: AsyncEngine, card_client: CardClient, provider: str
) -> None:
    created = await create_at(stack, card_client, provider)

    await finish(stack, provider, created["checkoutUrl"], "pay")

    await wait_status(stack, card_client, created["sessionId"], "COMPLETED")
    assert await session_events(db, created["sessionId"]) == [
        "card_session.created",
        "card_session.completed",
    ]


@pytest.mark.parametrize("provider", ["stripe", "adyen", "paypal"])
async def test_decline_fails_the_session(
    stack: CardStack, db: AsyncEngine, card_client: CardClient, provider: str
) -> None:
    created = await create_at(stack, card_client, provider)

    await finish(stack, provider, created["checkoutUrl"], "decline")

    await wait_status(stack, card_client, created["sessionId"], "FAILED")
    assert (await session_events(db, created["sessionId"]))[-1] == "card_session.failed"


async def stripe_events(stack: CardStack) -> list[dict[str, Any]]:
    secret = stack.providers.contexts["stripe"].secrets["api_key"]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(
            f"{stack.providers.url('stripe')}/v1/events",
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def deliver_stripe(
    stack: CardStack, event: dict[str, Any], *, secret: str | None = None
) -> httpx.Response:
    """A Stripe webhook as Stripe signs it (the local Stripe's secret unless told)."""
    body = json.dumps(event).encode()
    key = secret or stack.providers.contexts["stripe"].secrets["webhook_secret"]
    return await stack.http.post(
        "/api/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign(key, int(time.time()), body),
                 "Content-Type": "application/json"},
    )  # fmt: skip


def _variant(event: dict[str, Any], event_type: str, **session: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(event))
    copy["id"] = "evt_" + uuid.uuid4().hex[:24]
    copy["type"] = event_type
    copy["data"]["object"].update(session)
    return copy


async def paid_stripe_session(
    stack: CardStack, card_client: CardClient
) -> tuple[dict[str, Any], dict[str, Any]]:
    created = await create_at(stack, card_client, "stripe")
    await finish(stack, "stripe", created["checkoutUrl"], "pay")
    await wait_status(stack, card_client, created["sessionId"], "COMPLETED")
    completed = next(
        e
        for e in await stripe_events(stack)
        if e["type"] == "checkout.session.completed"
        and e["data"]["object"]["client_reference_id"] == created["sessionId"]
    )
    return created, completed


async def test_a_duplicate_webhook_is_a_no_op(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created, completed = await paid_stripe_session(stack, card_client)
    before = await session_events(db, created["sessionId"]), await inbox_count(db)

    response = await deliver_stripe(stack, completed)

    assert response.status_code == 200, response.text
    assert (await session_events(db, created["sessionId"]), await inbox_count(db)) == before


async def test_failed_after_completed_stays_completed(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created, completed = await paid_stripe_session(stack, card_client)
    failed = _variant(completed, "checkout.session.async_payment_failed", payment_status="unpaid")
    inbox = await inbox_count(db)

    response = await deliver_stripe(stack, failed)

    assert response.status_code == 200, response.text
    assert await inbox_count(db) == inbox + 1  # stored, and moved nothing
    assert await status_of(stack, card_client, created["sessionId"]) == "COMPLETED"
    assert (await session_events(db, created["sessionId"]))[-1] == "card_session.completed"


async def test_a_webhook_of_a_superseded_attempt_moves_nothing(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    _created, completed = await paid_stripe_session(stack, card_client)
    # Another session whose live attempt is elsewhere; a Stripe checkout named for it that is
    # not its live one (an orphan's), completing.
    other = await create_at(stack, card_client, "adyen")
    orphan = _variant(
        completed,
        "checkout.session.completed",
        id="cs_test_orphan" + uuid.uuid4().hex[:12],
        client_reference_id=other["sessionId"],
        metadata={"pago_session_id": other["sessionId"]},
    )
    async with db.begin() as conn:  # the attempt the orphan belongs to, as the sweeper left it
        await conn.execute(
            text(
                "INSERT INTO card_attempts (session_id, seq, provider, idempotency_key, status,"
                " reference) VALUES (:s, 9, 'stripe', 'pago-x-9', 'orphan_expired', :r)"
            ),
            {"s": other["sessionId"], "r": orphan["data"]["object"]["id"]},
        )
    before = await session_events(db, other["sessionId"])

    response = await deliver_stripe(stack, orphan)

    assert response.status_code == 200, response.text
    assert await status_of(stack, card_client, other["sessionId"]) == "PENDING"
    assert await session_events(db, other["sessionId"]) == before


async def test_a_bad_signature_is_refused_and_moves_nothing(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = await create_at(stack, card_client, "stripe")
    await finish(stack, "stripe", created["checkoutUrl"], "pay")
    await wait_status(stack, card_client, created["sessionId"], "COMPLETED")
    event = next(e for e in await stripe_events(stack) if e["type"] == "checkout.session.completed")
    forged = _variant(event, "checkout.session.async_payment_failed")
    inbox = await inbox_count(db)

    response = await deliver_stripe(stack, forged, secret="whsec_not_the_secret")

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert await inbox_count(db) == inbox


async def test_the_expiry_job_expires_a_due_session(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = await create_at(stack, card_client, "stripe")
    async with db.begin() as conn:
        await conn.execute(
            update(card_sessions)
            .where(card_sessions.c.id == created["sessionId"])
            .values(expires_at=text("now() - interval '1 second'"))
        )
    cards = stack.app.state.pago.cards
    assert cards is not None

    assert await cards.expire_due() == 1

    assert await status_of(stack, card_client, created["sessionId"]) == "EXPIRED"
    assert (await session_events(db, created["sessionId"]))[-1] == "card_session.expired"
    assert await cards.expire_due() == 0
