"""The hosted page and its SSE stream on two api replicas fed by the Redis live feed."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.asyncio import Redis

from pago.common.enums import Mode, Network, SessionStatus, TransactionStatus
from pago.common.events import (
    SessionPaymentDetected,
    SessionPaymentReverted,
    SessionSnapshot,
    SessionUpdated,
    TransactionSnapshot,
)
from pago.notifier.live import LiveFeed
from tests.support.api import Merchant, crypto_body
from tests.support.qr_decoder import decode, matrix_from_svg


async def new_session(
    http: httpx.AsyncClient, base: str, merchant: Merchant, **body: Any
) -> SessionSnapshot:
    response = await http.post(
        f"{base}/v1/checkout/sessions", json=crypto_body(**body), headers=merchant.headers()
    )
    assert response.status_code == 201, response.text
    return SessionSnapshot.model_validate(response.json())


def event(
    kind: type[SessionUpdated] | type[SessionPaymentDetected] | type[SessionPaymentReverted],
    snapshot: SessionSnapshot,
    merchant: Merchant,
    **extra: Any,
) -> Any:
    return kind(
        event_id=f"evt_{secrets.token_hex(12)}",
        session_id=snapshot.id,
        merchant_id=merchant.id,
        mode=Mode.TEST,
        occurred_at=datetime.now(UTC),
        session=snapshot,
        **extra,
    )


def confirming(snapshot: SessionSnapshot, confirmations: int) -> SessionSnapshot:
    tx = TransactionSnapshot(
        tx_hash="ab" * 32,
        amount="5",
        network=snapshot.network,
        status=TransactionStatus.CONFIRMING,
        confirmations=confirmations,
        from_address="TNPeeaaFB7K9cmo4uQpcU32zGK8G1NYqeL",
        created_at=datetime.now(UTC),
    )
    return snapshot.model_copy(update={"transactions": (tx,)})


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, url: str, last_event_id: str | None = None
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """The ``state`` events of an SSE response, as ``{"id", "state"}``."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")

        async def frames() -> AsyncIterator[dict[str, Any]]:
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if fields.get("event") == "state":
                        yield {"id": fields.get("id"), "state": json.loads(fields["data"])}
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

        yield frames()


async def next_state(frames: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(frames), timeout=5)


class TestPage:
    async def test_shows_the_session_and_a_scannable_qr_code(
        self, replicas: list[str], http: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        session = await new_session(http, replicas[0], merchant, network="ETHEREUM")
        response = await http.get(f"{replicas[1]}/checkout/{session.id}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        html = response.text
        assert "Acme Shop" in html
        assert f'value="{session.pay_address}"' in html
        assert f'<span class="figure" id="amount-due">{session.amount}</span>' in html
        assert "ETHEREUM (Sepolia)" in html
        assert "Waiting for payment" in html
        payload = re.search(r'data-qr-payload="([^"]+)"', html)
        assert payload is not None
        units = int(float(session.amount) * 10**6)
        assert payload.group(1).replace("&amp;", "&") == (
            f"ethereum:{session.currency_contract}@11155111/transfer"
            f"?address={session.pay_address}&uint256={units}"
        )
        qr_path = re.search(r'id="qr" src="([^"]+)"', html)
        assert qr_path is not None
        svg = await http.get(replicas[0] + qr_path.group(1).replace("&amp;", "&"))
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert decode(matrix_from_svg(svg.text)).decode() == payload.group(1).replace("&amp;", "&")

    async def test_a_tron_session_encodes_its_address(
        self, replicas: list[str], http: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        session = await new_session(http, replicas[0], merchant, network="TRON")
        html = (await http.get(f"{replicas[0]}/checkout/{session.id}")).text
        assert f'data-qr-payload="{session.pay_address}"' in html
        assert 'href="https://acme.example/cart"' in html  # the way back while waiting

    async def test_an_unknown_session(self, replicas: list[str], http: httpx.AsyncClient) -> None:
        page = await http.get(f"{replicas[0]}/checkout/cs_nope")
        assert page.status_code == 404
        assert "Checkout not found" in page.text
        events = await http.get(f"{replicas[0]}/v1/checkout/sessions/cs_nope/events")
        assert events.status_code == 404
        assert events.json()["error"]["code"] == "resource_missing"

    async def test_assets_are_served(self, replicas: list[str], http: httpx.AsyncClient) -> None:
        script = await http.get(f"{replicas[0]}/checkout/assets/checkout.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in script.text
        assert (await http.get(f"{replicas[0]}/checkout/assets/nope.js")).status_code == 404


class TestEvents:
    async def test_any_replica_streams_the_feed_and_replays_after_last_event_id(
        self, replicas: list[str], http: httpx.AsyncClient, merchant: Merchant, redis: Redis
    ) -> None:
        feed = LiveFeed(redis)
        session = await new_session(http, replicas[0], merchant, network="TRON")
        path = f"/v1/checkout/sessions/{session.id}/events"

        async with sse(http, replicas[0] + path) as frames:
            first = await next_state(frames)
            assert first["id"] is None  # nothing in the feed yet: the state from Postgres
            assert first["state"]["phase"] == "waiting"
            assert first["state"]["amount_due"] == session.amount
            assert "client_reference_id" not in first["state"]
            await feed.publish(
                [event(SessionPaymentDetected, confirming(session, 3), merchant, tx_hash="ab" * 32)]
            )
            detected = await next_state(frames)
        assert detected["state"]["phase"] == "confirming"
        assert detected["state"]["confirmations"] == 3
        assert detected["state"]["required_confirmations"] == 19

        underpaid = session.model_copy(
            update={"status": SessionStatus.UNDERPAID, "amount_received": "5"}
        )
        await feed.publish([event(SessionUpdated, underpaid, merchant)])  # while disconnected
        async with sse(http, replicas[1] + path, last_event_id=detected["id"]) as frames:
            replayed = await next_state(frames)
            assert replayed["state"]["phase"] == "underpaid"
            assert replayed["state"]["amount_due"] == "5.5"
            assert replayed["id"] > detected["id"]
            paid = underpaid.model_copy(
                update={"status": SessionStatus.PAID, "amount_received": session.amount}
            )
            await feed.publish([event(SessionUpdated, paid, merchant)])
            final = await next_state(frames)
            assert final["state"]["phase"] == "paid"
            assert final["state"]["success_url"] == "https://acme.example/thanks"
            with_end = [f async for f in frames]  # the stream ends after a final state
        assert with_end == []

    async def test_a_reverted_payment_updates_the_open_page(
        self, replicas: list[str], http: httpx.AsyncClient, merchant: Merchant, redis: Redis
    ) -> None:
        session = await new_session(http, replicas[0], merchant, network="TRON")
        path = f"/v1/checkout/sessions/{session.id}/events"
        underpaid = session.model_copy(
            update={"status": SessionStatus.UNDERPAID, "amount_received": "5"}
        )
        tx = TransactionSnapshot(
            tx_hash="ab" * 32,
            amount="5",
            network=session.network,
            status=TransactionStatus.REVERTED,
            confirmations=0,
            from_address="TNPeeaaFB7K9cmo4uQpcU32zGK8G1NYqeL",
            created_at=datetime.now(UTC),
        )
        after = underpaid.model_copy(update={"transactions": (tx,)})

        async with sse(http, replicas[0] + path) as frames:
            assert (await next_state(frames))["state"]["phase"] == "waiting"
            await LiveFeed(redis).publish(
                [event(SessionPaymentReverted, after, merchant, tx_hash="ab" * 32, log_index=0)]
            )
            update = await next_state(frames)
        assert update["id"] is not None
        assert update["state"]["phase"] == "underpaid"  # the credit stands until a human decides
        assert update["state"]["amount_received"] == "5"

    async def test_a_reconnect_without_a_replayable_id_starts_from_postgres(
        self, replicas: list[str], http: httpx.AsyncClient, merchant: Merchant, redis: Redis
    ) -> None:
        session = await new_session(
            http, replicas[0], merchant, network="SOLANA", currency="USDC", pricing_currency="USDC"
        )
        await LiveFeed(redis).publish([event(SessionUpdated, session, merchant)])
        path = f"/v1/checkout/sessions/{session.id}/events"
        async with sse(http, replicas[1] + path, last_event_id="1-0") as frames:
            state = await next_state(frames)
        assert state["state"]["phase"] == "waiting"
        assert state["state"]["network"] == Network.SOLANA
        assert state["state"]["payment_uri"].startswith(f"solana:{session.pay_address}?amount=")
        assert state["id"] is not None  # tagged with the feed's newest entry
