"""POST /api/v1/sessions and GET /api/v1/sessions/{id} against the local providers over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import card_route_stats, card_sessions, outbox
from pago.devstack.cardproviders.context import FailureMode
from tests.component.api.cards.support import (
    SEED_RAW,
    CardClient,
    CardStack,
    counts,
    new_card_client,
    seed_body,
)
from tests.support.api import seed_merchant

SESSIONS = "/api/v1/sessions"


async def create(
    stack: CardStack, client: CardClient, key: str | None = None, body: bytes = SEED_RAW
) -> httpx.Response:
    return await stack.http.post(
        SESSIONS, content=body, headers=client.headers(key or str(uuid.uuid4()))
    )


async def test_the_seed_body_creates_a_pending_session_at_the_winner(
    stack: CardStack, card_client: CardClient
) -> None:
    response = await create(stack, card_client)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"sessionId", "checkoutUrl", "status", "routing", "expiresAt", "createdAt"}
    uuid.UUID(body["sessionId"])
    assert body["status"] == "PENDING"
    winner = body["routing"]["selectedProvider"]
    assert set(body["routing"]) == {"selectedProvider", "score"}
    assert body["checkoutUrl"].startswith(stack.providers.url(winner) + "/")
    score = Decimal(str(body["routing"]["score"]))
    assert score == score.quantize(Decimal("0.1"))
    assert 0 <= score <= 100
    assert datetime.fromisoformat(body["expiresAt"]) > datetime.fromisoformat(body["createdAt"])
    assert body["expiresAt"].endswith("Z")
    assert body["createdAt"].endswith("Z")
    assert sum(counts(stack).values()) == 1
    assert counts(stack)[winner] == 1


async def test_get_shows_attempts_and_routing_components(
    stack: CardStack, card_client: CardClient
) -> None:
    created = (await create(stack, card_client)).json()

    response = await stack.http.get(
        f"{SESSIONS}/{created['sessionId']}", headers=card_client.headers()
    )

    assert response.status_code == 200, response.text
    got = response.json()
    assert got["sessionId"] == created["sessionId"]
    assert got["status"] == "PENDING"
    assert got["amount"]["total"] == "140.76"
    assert got["amount"]["currency"] == "AUD"
    assert got["routing"]["selectedProvider"] == created["routing"]["selectedProvider"]
    names = {c["name"] for c in got["routing"]["components"]}
    assert {"conversion", "availability", "cost", "latency"} <= names
    assert [a["status"] for a in got["attempts"]] == ["created"]
    assert got["checkoutUrl"] == created["checkoutUrl"]


async def test_another_merchants_session_is_404(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    created = (await create(stack, card_client)).json()
    other = await new_card_client(
        stack, db, await seed_merchant(db, stack.settings, name="Other Co", account=1)
    )

    response = await stack.http.get(f"{SESSIONS}/{created['sessionId']}", headers=other.headers())

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"


async def test_no_token_or_a_bad_one_is_401(stack: CardStack, card_client: CardClient) -> None:
    missing = await stack.http.post(
        SESSIONS,
        content=SEED_RAW,
        headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    bad = await stack.http.post(
        SESSIONS,
        content=SEED_RAW,
        headers={"Authorization": "Bearer not.a.jwt", "Idempotency-Key": "k"},
    )

    for response in (missing, bad):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "authentication_failed"
    assert sum(counts(stack).values()) == 0


async def test_a_missing_idempotency_key_is_400(stack: CardStack, card_client: CardClient) -> None:
    response = await stack.http.post(SESSIONS, content=SEED_RAW, headers=card_client.headers())

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("parameter_missing", "Idempotency-Key")


async def test_the_same_key_and_body_replay_the_stored_201(
    stack: CardStack, card_client: CardClient
) -> None:
    first = await create(stack, card_client, "order-1")
    again = await create(stack, card_client, "order-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotency-Replayed"] == "true"
    assert sum(counts(stack).values()) == 1


async def test_the_same_key_with_another_body_is_409(
    stack: CardStack, card_client: CardClient
) -> None:
    assert (await create(stack, card_client, "order-2")).status_code == 201
    other = seed_body(orderReference="ORD-OTHER")
    import json

    response = await create(stack, card_client, "order-2", json.dumps(other).encode())

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert sum(counts(stack).values()) == 1


async def test_concurrent_requests_with_one_key_make_one_provider_call(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    responses = await asyncio.gather(*(create(stack, card_client, "race") for _ in range(5)))

    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    assert len({r.json()["sessionId"] for r in created}) == 1
    assert sum(counts(stack).values()) == 1
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(card_sessions)) == 1


async def test_more_concurrent_creates_than_pool_connections_all_succeed(
    stack: CardStack, card_client: CardClient
) -> None:
    """Each create keeps its request's transaction open across the provider call and commits
    short ones beside it: with those from the same pool, as many creates as connections held
    every connection and waited for a second one (the pool's timeout, then a 500 each)."""
    pool = stack.settings.db_pool_size * 2  # pool_size + max_overflow
    responses = await asyncio.gather(*(create(stack, card_client) for _ in range(pool + 6)))

    assert [r.status_code for r in responses] == [201] * len(responses), [
        r.text for r in responses if r.status_code != 201
    ]
    assert len({r.json()["sessionId"] for r in responses}) == len(responses)


def _availability(session: dict[str, Any], provider: str) -> Decimal:
    candidate = next(c for c in session["routing"]["candidates"] if c["provider"] == provider)
    return next(
        Decimal(str(c["value"])) for c in candidate["components"] if c["name"] == "availability"
    )


async def _get(stack: CardStack, client: CardClient, session_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"{SESSIONS}/{session_id}", headers=client.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        (FailureMode.TIMEOUT, "timed_out"),
        (FailureMode.SERVER_ERROR, "failed"),
        (FailureMode.RATE_LIMITED, "failed"),
    ],
)
async def test_a_failing_provider_fails_over_and_scores_lower_next_time(
    stack: CardStack, db: AsyncEngine, redis: Redis, card_client: CardClient,
    mode: FailureMode, status: str,
) -> None:  # fmt: skip
    # With no history the ranking is the same for every session: learn its head, then forget.
    first = (await create(stack, card_client)).json()
    head = first["routing"]["selectedProvider"]
    fresh = await _get(stack, card_client, first["sessionId"])
    async with db.begin() as conn:
        await conn.execute(delete(card_route_stats))
    await redis.flushdb()
    stack.providers.set_failure(head, mode, count=1)

    response = await create(stack, card_client)

    assert response.status_code == 201, response.text
    body = response.json()
    winner = body["routing"]["selectedProvider"]
    assert winner != head
    assert body["checkoutUrl"].startswith(stack.providers.url(winner) + "/")
    got = await _get(stack, card_client, body["sessionId"])
    assert [(a["provider"], a["status"]) for a in got["attempts"]] == [
        (head, status),
        (winner, "created"),
    ]
    following = await _get(
        stack, card_client, (await create(stack, card_client)).json()["sessionId"]
    )
    assert _availability(following, head) < _availability(fresh, head)


async def test_every_provider_down_is_503(
    stack: CardStack, db: AsyncEngine, card_client: CardClient
) -> None:
    for name in stack.providers.contexts:
        stack.providers.set_failure(name, FailureMode.SERVER_ERROR)

    response = await create(stack, card_client)

    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"]
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(outbox)) == 0
