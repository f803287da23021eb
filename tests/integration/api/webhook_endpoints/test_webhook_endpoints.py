"""``/v1/webhook_endpoints``: CRUD, URL policy, secrets and rotation, ping, the delivery log and
manual redelivery — through the real api, with the notifier's worker sending what it queued."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.idempotency.durable import REDACTED
from pago.api.webhook_endpoints.settings import WebhookSettings
from pago.common.db.schema import idempotency_records, webhook_endpoints
from pago.common.enums import Mode, WebhookEventType
from pago.notifier.worker import DeliveryWorker
from tests.integration.api.webhook_endpoints.support import webhook_settings
from tests.support.api import Merchant, assert_error
from tests.support.receiver import Receiver, Reply, verify

BASE = "/v1/webhook_endpoints"


async def create(
    client: httpx.AsyncClient, merchant: Merchant, url: str, mode: Mode = Mode.TEST, **body: Any
) -> dict[str, Any]:
    response = await client.post(BASE, json={"url": url, **body}, headers=merchant.headers(mode))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stored(db: AsyncEngine, endpoint_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        row = await conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
        )
        return dict(row.mappings().one())


class TestCreate:
    async def test_returns_the_secret_once(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await create(client, merchant, "https://shop.example/hooks", description="main")
        assert created["id"].startswith("we_")
        assert created["object"] == "webhook_endpoint"
        assert created["enabled_events"] == [
            "session.completed",
            "session.expired",
            "session.blocked",
            "session.resolved",
            "card_session.completed",
            "card_session.failed",
            "card_session.expired",
        ]
        assert created["status"] == "enabled"
        assert created["livemode"] is False
        assert created["description"] == "main"
        assert created["created_at"].endswith("Z")
        secret = created["secret"]
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32

        shown = await client.get(f"{BASE}/{created['id']}", headers=merchant.headers())
        assert shown.status_code == 200
        assert "secret" not in shown.json()
        assert {k: v for k, v in created.items() if k != "secret"} == shown.json()
        listed = (await client.get(BASE, headers=merchant.headers())).json()
        assert listed["meta"] == {"total": 1, "page": 1, "page_size": 20, "total_pages": 1}
        assert "secret" not in listed["data"][0]

    async def test_opt_in_events_are_listed_explicitly(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await create(
            client,
            merchant,
            "https://shop.example/hooks",
            enabled_events=["session.underpaid", "session.payment_detected", "session.underpaid"],
        )
        assert created["enabled_events"] == ["session.underpaid", "session.payment_detected"]

    async def test_payment_reverted_is_opt_in(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        default = await create(client, merchant, "https://shop.example/default")
        assert "session.payment_reverted" not in default["enabled_events"]
        opted = await create(
            client,
            merchant,
            "https://shop.example/reorgs",
            enabled_events=["session.payment_reverted"],
        )
        assert opted["enabled_events"] == ["session.payment_reverted"]

    async def test_card_session_created_and_cancelled_are_opt_in(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        default = await create(client, merchant, "https://shop.example/default")
        assert "card_session.created" not in default["enabled_events"]
        assert "card_session.cancelled" not in default["enabled_events"]
        opted = await create(
            client,
            merchant,
            "https://shop.example/cards",
            enabled_events=["card_session.created", "card_session.cancelled"],
        )
        assert opted["enabled_events"] == ["card_session.created", "card_session.cancelled"]

    async def test_the_openapi_document_lists_every_event_type(
        self, client: httpx.AsyncClient
    ) -> None:
        spec = (await client.get("/openapi.json")).json()
        documented = set(spec["components"]["schemas"]["WebhookEventType"]["enum"])
        assert documented == {event.value for event in WebhookEventType}
        assert documented >= {"card_session.completed", "card_session.failed"}

    @pytest.mark.parametrize(
        "events",
        [[], ["session.created"], ["payout.completed"], ["card_session.paid"], "session.completed"],
    )
    async def test_unknown_or_no_events_are_refused(
        self, events: Any, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await client.post(
            BASE,
            json={"url": "https://shop.example/h", "enabled_events": events},
            headers=merchant.headers(),
        )
        assert_error(response, 400, "parameter_invalid")
        assert response.json()["error"]["param"].startswith("enabled_events")

    @pytest.mark.parametrize(
        ("url", "mode", "message"),
        [
            ("http://10.0.0.1/hook", Mode.TEST, "private"),
            ("http://192.168.1.10:8080/hook", Mode.TEST, "private"),
            ("http://169.254.169.254/latest/meta-data/", Mode.TEST, "metadata"),
            ("http://[fd00:ec2::254]/", Mode.TEST, "metadata"),
            ("http://[::ffff:10.0.0.1]/", Mode.TEST, "private"),
            ("http://0.0.0.0:9000/", Mode.TEST, "unspecified"),
            ("http://100.64.0.5/", Mode.TEST, "not a public address"),
            ("http://127.0.0.1:9000/", Mode.TEST, "loopback"),
            ("http://localhost:9000/", Mode.TEST, "localhost"),
            ("http://app.localhost/", Mode.TEST, "localhost"),
            ("http://shop.example/hook", Mode.LIVE, "https in live mode"),
            ("https://user:pass@shop.example/hook", Mode.TEST, "credentials"),
            ("ftp://shop.example/hook", Mode.TEST, "http(s) URL"),
            ("https://shop.example:99999/hook", Mode.TEST, "valid"),
        ],
    )
    async def test_urls_webhooks_must_not_reach_are_refused(
        self, url: str, mode: Mode, message: str, app: FastAPI, api: Any, merchant: Merchant
    ) -> None:
        _, client = api
        with webhook_settings(app, env="production"):
            response = await client.post(BASE, json={"url": url}, headers=merchant.headers(mode))
        error = assert_error(response, 400, "parameter_invalid", param="url")
        assert message in error["message"]

    @pytest.mark.parametrize(
        ("values", "allowed"),
        [
            ({"env": "development"}, True),  # make dev: the developer's app on localhost
            ({"env": "test"}, False),
            ({"env": "production"}, False),
            ({"env": "development", "webhook_allow_loopback": False}, False),
            ({"env": "test", "webhook_allow_loopback": True}, True),
        ],
    )
    @pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://localhost:3000/hook"])
    async def test_loopback_by_environment_and_override(
        self,
        values: dict[str, object],
        allowed: bool,
        url: str,
        app: FastAPI,
        api: Any,
        merchant: Merchant,
    ) -> None:
        _, client = api
        with webhook_settings(app, **values):
            response = await client.post(BASE, json={"url": url}, headers=merchant.headers())
        if allowed:
            assert response.status_code == 201, response.text
            assert response.json()["url"] == url
        else:
            assert_error(response, 400, "parameter_invalid", param="url")

    def test_the_override_cannot_allow_loopback_in_production(self) -> None:
        with pytest.raises(ValidationError, match="must not be true in production"):
            WebhookSettings.model_validate({"env": "production", "webhook_allow_loopback": True})
        explicit_no = WebhookSettings.model_validate(
            {"env": "production", "webhook_allow_loopback": False}
        )
        assert explicit_no.webhook_loopback_allowed is False

    async def test_a_live_endpoint_needs_https(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await create(client, merchant, "https://shop.example/live", mode=Mode.LIVE)
        assert created["livemode"] is True

    async def test_endpoints_per_merchant_and_mode_are_limited(
        self, app: FastAPI, api: Any, merchant: Merchant
    ) -> None:
        _, client = api
        with webhook_settings(app, webhook_max_endpoints=2):
            for i in range(2):
                await create(client, merchant, f"https://shop.example/{i}")
            await create(client, merchant, "https://shop.example/live", mode=Mode.LIVE)
            response = await client.post(
                BASE, json={"url": "https://shop.example/3"}, headers=merchant.headers()
            )
        assert_error(response, 400, "webhook_endpoint_limit")

    async def test_an_idempotent_retry_returns_the_same_endpoint_without_its_secret(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, redis: Redis
    ) -> None:
        headers = merchant.headers(idempotency_key="create-hook-1")
        body = {"url": "https://shop.example/hooks"}
        first = await client.post(BASE, json=body, headers=headers)
        secret = first.json()["secret"]
        assert secret.startswith("whsec_")
        again = await client.post(BASE, json=body, headers=headers)
        assert again.headers["Idempotency-Replayed"] == "true"
        assert again.json() == {**first.json(), "secret": REDACTED}
        await redis.flushdb()  # and from Postgres, the durable copy
        durable = await client.post(BASE, json=body, headers=headers)
        assert durable.headers["Idempotency-Replayed"] == "true"
        assert durable.json() == again.json()
        listed = (await client.get(BASE, headers=merchant.headers())).json()
        assert listed["meta"]["total"] == 1
        # Neither store keeps the secret in plaintext.
        for key in await redis.keys("pago:idem:*"):
            fields = await redis.hgetall(key)
            assert all(secret not in str(v) for v in fields.values())
        async with db.connect() as conn:
            bodies = (await conn.execute(select(idempotency_records.c.body))).scalars().all()
        assert bodies
        assert all(secret.encode() not in stored for stored in bodies)

    async def test_a_replayed_rotation_does_not_show_the_new_secret(
        self, client: httpx.AsyncClient, merchant: Merchant, redis: Redis
    ) -> None:
        created = await create(client, merchant, "https://shop.example/rot")
        path = f"{BASE}/{created['id']}/rotate_secret"
        headers = merchant.headers(idempotency_key="rotate-1")
        first = await client.post(path, headers=headers)
        await redis.flushdb()
        again = await client.post(path, headers=headers)
        assert again.headers["Idempotency-Replayed"] == "true"
        assert first.json()["secret"].startswith("whsec_")
        assert again.json() == {**first.json(), "secret": REDACTED}

    async def test_needs_an_api_key(self, client: httpx.AsyncClient) -> None:
        response = await client.post(BASE, json={"url": "https://shop.example/hooks"})
        assert_error(response, 401, "authentication_failed")


class TestRetrieve:
    async def test_another_mode_or_merchant_sees_404(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine, settings: Any
    ) -> None:
        from tests.support.api import seed_merchant

        created = await create(client, merchant, "https://shop.example/hooks")
        other = await seed_merchant(
            db, settings, name="Other", account=1, xpub_families=(), solana_pool=0, sub_merchants=()
        )
        for headers in (merchant.headers(Mode.LIVE), other.headers()):
            response = await client.get(f"{BASE}/{created['id']}", headers=headers)
            assert_error(response, 404, "resource_missing")
            listed = (await client.get(BASE, headers=headers)).json()
            assert listed["data"] == []

    async def test_lists_newest_first_by_page(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        ids = [
            (await create(client, merchant, f"https://shop.example/{i}"))["id"] for i in range(3)
        ]
        page = (await client.get(f"{BASE}?page=2&page_size=2", headers=merchant.headers())).json()
        assert [e["id"] for e in page["data"]] == [ids[0]]
        assert page["meta"] == {"total": 3, "page": 2, "page_size": 2, "total_pages": 2}


class TestUpdate:
    async def test_changes_only_what_is_given(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await create(client, merchant, "https://shop.example/a", description="first")
        response = await client.post(
            f"{BASE}/{created['id']}",
            json={"url": "https://shop.example/b", "enabled_events": ["session.expired"]},
            headers=merchant.headers(),
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        assert updated["url"] == "https://shop.example/b"
        assert updated["enabled_events"] == ["session.expired"]
        assert updated["description"] == "first"
        refused = await client.post(
            f"{BASE}/{created['id']}", json={"url": "http://10.1.1.1/"}, headers=merchant.headers()
        )
        assert_error(refused, 400, "parameter_invalid", param="url")

    async def test_disabling_pauses_pending_deliveries_and_enabling_resumes_them(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        hooks: Receiver,
        worker: DeliveryWorker,
    ) -> None:
        created = await create(client, merchant, hooks.url("/paused"))
        path = f"{BASE}/{created['id']}"
        ping = (await client.post(f"{path}/ping", headers=merchant.headers())).json()
        off = await client.post(path, json={"disabled": True}, headers=merchant.headers())
        assert off.json()["status"] == "disabled"
        assert off.json()["disabled_reason"] == "disabled through the API"
        assert await worker.run_once() == 0
        log = (await client.get(f"{path}/deliveries", headers=merchant.headers())).json()
        assert log["data"][0]["next_attempt_at"] is None
        again = await client.post(f"{path}/ping", headers=merchant.headers())
        assert_error(again, 409, "endpoint_disabled")

        on = await client.post(path, json={"disabled": False}, headers=merchant.headers())
        assert on.json()["status"] == "enabled"
        assert on.json()["disabled_reason"] is None
        assert await worker.run_once() == 1
        assert [r.event["id"] for r in hooks.at("/paused")] == [ping["event_id"]]


class TestDelete:
    async def test_is_gone_and_its_pending_deliveries_close(
        self, client: httpx.AsyncClient, merchant: Merchant, worker: DeliveryWorker
    ) -> None:
        created = await create(client, merchant, "https://shop.example/hooks")
        path = f"{BASE}/{created['id']}"
        await client.post(f"{path}/ping", headers=merchant.headers())
        response = await client.delete(path, headers=merchant.headers())
        assert response.json() == {
            "object": "webhook_endpoint",
            "id": created["id"],
            "deleted": True,
        }
        assert_error(await client.get(path, headers=merchant.headers()), 404, "resource_missing")
        assert_error(await client.delete(path, headers=merchant.headers()), 404, "resource_missing")
        assert await worker.run_once() == 0
        assert (await client.get(BASE, headers=merchant.headers())).json()["data"] == []


class TestRotateSecret:
    async def test_the_old_secret_keeps_signing_for_24_hours(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        db: AsyncEngine,
        hooks: Receiver,
        worker: DeliveryWorker,
    ) -> None:
        created = await create(client, merchant, hooks.url("/rotate"))
        path = f"{BASE}/{created['id']}"
        response = await client.post(f"{path}/rotate_secret", headers=merchant.headers())
        assert response.status_code == 200, response.text
        rotated = response.json()
        assert rotated["secret"] != created["secret"]
        expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
        row = await stored(db, created["id"])
        assert (row["secret"], row["previous_secret"]) == (rotated["secret"], created["secret"])

        await client.post(f"{path}/ping", headers=merchant.headers())
        assert await worker.run_once() == 1
        [ping] = hooks.at("/rotate")
        event = verify(ping, rotated["secret"], previous=created["secret"])
        assert event["event_type"] == "webhook.ping"
        assert event["data"] == {
            "object": "webhook_endpoint",
            "id": created["id"],
            "url": created["url"],
            "livemode": False,
        }


class TestPingAndDeliveryLog:
    async def test_a_ping_is_sent_signed_and_logged(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        hooks: Receiver,
        worker: DeliveryWorker,
    ) -> None:
        created = await create(client, merchant, hooks.url("/ping"))
        path = f"{BASE}/{created['id']}"
        response = await client.post(f"{path}/ping", headers=merchant.headers())
        assert response.status_code == 202, response.text
        queued = response.json()
        assert queued["object"] == "webhook_delivery"
        assert queued["status"] == "pending"
        assert queued["attempts"] == 0
        assert await worker.run_once() == 1
        [received] = hooks.at("/ping")
        assert verify(received, created["secret"])["id"] == queued["event_id"]

        log = (await client.get(f"{path}/deliveries", headers=merchant.headers())).json()
        [entry] = log["data"]
        assert entry["id"] == queued["id"]
        assert entry["status"] == "succeeded"
        assert entry["attempts"] == 1
        assert entry["last_status_code"] == 200
        assert entry["delivered_at"] is not None
        detail = await client.get(f"{path}/deliveries/{queued['id']}", headers=merchant.headers())
        assert detail.json()["payload"] == received.event

    async def test_the_log_filters_and_pages(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        hooks: Receiver,
        worker: DeliveryWorker,
    ) -> None:
        created = await create(client, merchant, hooks.url("/log"))
        path = f"{BASE}/{created['id']}"
        hooks.script("/log", Reply(500))
        for _ in range(3):
            await client.post(f"{path}/ping", headers=merchant.headers())
        assert await worker.run_once() == 3
        headers = merchant.headers()
        pending = (await client.get(f"{path}/deliveries?status=pending", headers=headers)).json()
        succeeded = (
            await client.get(f"{path}/deliveries?status=succeeded", headers=headers)
        ).json()
        assert (pending["meta"]["total"], succeeded["meta"]["total"]) == (1, 2)
        [failing] = pending["data"]
        assert failing["last_status_code"] == 500
        assert failing["last_error"] == "HTTP 500: ok"
        assert failing["next_attempt_at"] is not None
        page = (await client.get(f"{path}/deliveries?page_size=2&page=2", headers=headers)).json()
        assert len(page["data"]) == 1
        assert page["meta"]["total_pages"] == 2
        typed = await client.get(f"{path}/deliveries?event_type=session.completed", headers=headers)
        assert typed.json()["data"] == []
        bad = await client.get(f"{path}/deliveries?status=lost", headers=headers)
        assert_error(bad, 400, "parameter_invalid", param="status.0")


class TestRedeliver:
    async def test_sends_the_same_event_again_on_a_fresh_schedule(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        hooks: Receiver,
        worker: DeliveryWorker,
    ) -> None:
        created = await create(client, merchant, hooks.url("/again"))
        path = f"{BASE}/{created['id']}"
        queued = (await client.post(f"{path}/ping", headers=merchant.headers())).json()
        await worker.run_once()
        response = await client.post(
            f"{path}/deliveries/{queued['id']}/redeliver", headers=merchant.headers()
        )
        assert response.status_code == 202, response.text
        assert (response.json()["status"], response.json()["attempts"]) == ("pending", 0)
        assert await worker.run_once() == 1
        first, second = hooks.at("/again")
        assert first.body == second.body
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == queued["event_id"]

    async def test_unknown_delivery_or_disabled_endpoint(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await create(client, merchant, "https://shop.example/hooks")
        path = f"{BASE}/{created['id']}"
        missing = await client.post(
            f"{path}/deliveries/wd_nope/redeliver", headers=merchant.headers()
        )
        assert_error(missing, 404, "resource_missing", param="delivery_id")
        queued = (await client.post(f"{path}/ping", headers=merchant.headers())).json()
        await client.post(path, json={"disabled": True}, headers=merchant.headers())
        refused = await client.post(
            f"{path}/deliveries/{queued['id']}/redeliver", headers=merchant.headers()
        )
        assert_error(refused, 409, "endpoint_disabled")
