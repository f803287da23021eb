"""Card checkout end to end: the api and the notifier as processes, the local card providers on a
real port, a payer in Debian's chromium. A merchant's OAuth client gets a token from
``/oauth/token``, creates the seed's session (its exact body), the payer clicks Pay (or Decline)
on the provider's hosted page, the provider's signed webhook reaches the api, ``GET`` shows the
outcome, and the merchant's endpoint receives a signed ``card_session.completed`` (``.failed``).
A provider that is down when it is the winner loses the session to the next one and scores lower
after. Every hosted page's buttons and inputs have accessible names (chromium's own tree).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route
from redis.asyncio import Redis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import card_route_stats
from pago.common.enums import Mode
from pago.devstack._support import free_tcp_port
from pago.devstack.cardproviders.server import CardProviderServer
from tests.e2e.support import Pipeline, admin, api_client, bin_path, chromium
from tests.support.api import Merchant
from tests.support.processes import ServiceProcess
from tests.support.receiver import Receiver, verify

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SEED_RAW = (Path(__file__).parents[1] / "support" / "cards" / "seed_request.json").read_bytes()
SEED_SHAPE = {"sessionId", "checkoutUrl", "status", "routing", "expiresAt", "createdAt"}
SESSIONS = "/api/v1/sessions"
HOOKS = "/merchant/hooks"
MERCHANT_SITE = "https://merchant.example.com/"
"""Where the seed's redirectUrls point; the browser is answered there by the test."""
NAMED_ROLES = {"button", "textbox", "checkbox", "radio", "combobox", "listbox", "spinbutton"}


@dataclass
class CardCheckout:
    api: httpx.AsyncClient
    """As the merchant's OAuth client (its bearer token)."""
    providers: CardProviderServer
    pipeline: Pipeline
    hooks: Receiver
    hook_secret: str

    async def create(self) -> dict[str, Any]:
        """The seed's exact body with an Idempotency-Key: 201 in the seed's shape."""
        response = await self.api.post(
            SESSIONS,
            content=SEED_RAW,
            headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        assert set(created) == SEED_SHAPE
        assert created["status"] == "PENDING"
        assert set(created["routing"]) == {"selectedProvider", "score"}
        winner = created["routing"]["selectedProvider"]
        assert created["checkoutUrl"].startswith(self.providers.url(winner) + "/")
        return created

    async def get(self, session_id: str) -> dict[str, Any]:
        response = await self.api.get(f"{SESSIONS}/{session_id}")
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    async def until_status(self, session_id: str, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return await self.get(session_id)

        shown: dict[str, Any] = await self.pipeline.until(
            probe, lambda s: s["status"] == status, timeout=60
        )
        return shown

    async def fail(self, provider: str, mode: str, count: int | None = None) -> None:
        """Set a provider's failure mode through the server's HTTP control endpoint."""
        body: dict[str, Any] = {"mode": mode}
        if count is not None:
            body["count"] = count
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.providers.base_url}/_control/{provider}", json=body)
        assert response.status_code == 200, response.text


def card_env(
    server_env: Mapping[str, str], providers: CardProviderServer, base: str
) -> dict[str, str]:
    return {
        **server_env,
        **providers.env_vars(),
        "PAGO_CARD_ENABLED_PROVIDERS": ",".join(sorted(providers.contexts)),
        "PAGO_CARD_CREATE_TIMEOUT_SECONDS": "1",
        "PAGO_CARD_STATS_CACHE_SECONDS": "0",
        "PAGO_CHECKOUT_BASE_URL": f"{base}/checkout/",
        "PAGO_LOG_LEVEL": "INFO",
        # The merchant's endpoint is this test's receiver on 127.0.0.1 (api and notifier alike).
        "PAGO_WEBHOOK_ALLOW_LOOPBACK": "true",
    }


async def oauth_token(http: httpx.AsyncClient, env: Mapping[str, str], merchant: Merchant) -> str:
    """A client made with ``pago-admin oauth-client create``, and a token from /oauth/token."""
    made = json.loads(
        admin(env, "--json", "oauth-client", "create", "--merchant", merchant.id, "--mode", "test",
              "--scope", "sessions:write sessions:read")
    )  # fmt: skip
    basic = base64.b64encode(f"{made['client_id']}:{made['client_secret']}".encode()).decode()
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    token: dict[str, Any] = response.json()
    assert set(token["scope"].split()) == {"sessions:write", "sessions:read"}
    return str(token["access_token"])


@pytest.fixture
async def checkout(
    server_env: dict[str, str], db: AsyncEngine, redis: Redis, merchant: Merchant
) -> AsyncIterator[CardCheckout]:
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    hooks = Receiver()
    await hooks.start()
    pipeline = Pipeline([])
    try:
        with CardProviderServer(webhook_base_url=base) as providers:
            env = card_env(server_env, providers, base)
            notifier = {
                **env,
                "PAGO_NOTIFIER_HTTP_PORT": "0",
                "PAGO_NOTIFIER_GROUP_ID": f"notifier-cards-e2e-{uuid.uuid4().hex[:8]}",
                "PAGO_NOTIFIER_BATCH_WAIT_MS": "20",
                "PAGO_NOTIFIER_FETCH_WAIT_MS": "50",
            }
            api = [bin_path("pago-api"), "--host", "127.0.0.1", "--port", str(port)]
            pipeline.services.append(ServiceProcess("api", api, env))
            pipeline.services.append(
                ServiceProcess("notifier", [bin_path("pago-notifier")], notifier)
            )
            await pipeline.service("notifier").wait_log_async("notifier started")
            async with api_client(base, pipeline, merchant.keys[Mode.TEST]) as as_merchant:
                endpoint = await as_merchant.post(
                    "/v1/webhook_endpoints",
                    json={
                        "url": hooks.url(HOOKS),
                        "enabled_events": ["card_session.completed", "card_session.failed"],
                    },
                )
                assert endpoint.status_code == 201, endpoint.text
                token = await oauth_token(as_merchant, env, merchant)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api_http:
                yield CardCheckout(
                    api_http, providers, pipeline, hooks, str(endpoint.json()["secret"])
                )
    finally:
        pipeline.stop()
        await hooks.stop()


async def accessible_names(page: Page) -> None:
    """Every button and input on the page has an accessible name, as chromium computes it."""
    cdp = await page.context.new_cdp_session(page)
    tree = await cdp.send("Accessibility.getFullAXTree")
    controls = [
        node
        for node in tree["nodes"]
        if not node.get("ignored") and node.get("role", {}).get("value") in NAMED_ROLES
    ]
    assert any(c["role"]["value"] == "button" for c in controls), "the page has its buttons"
    unnamed = [
        (c["role"]["value"], c.get("backendDOMNodeId"))
        for c in controls
        if not str(c.get("name", {}).get("value", "")).strip()
    ]
    assert unnamed == [], f"controls without an accessible name on {page.url}: {unnamed}"
    await cdp.detach()


async def pay_in_browser(checkout_url: str, button: str, landing: str) -> None:
    """Open the hosted page, check its names, click ``button``; the payer lands on the seed's
    redirect URL ``landing`` (``*``: either; Adyen has one ``returnUrl`` for every outcome), which
    the test answers: merchant.example.com is not on this network."""
    async with chromium() as browser:
        page = await browser.new_page()

        async def merchant_site(route: Route) -> None:
            await route.fulfill(status=200, content_type="text/html", body="<h1>Merchant</h1>")

        await page.route(f"{MERCHANT_SITE}**", merchant_site)
        await page.goto(checkout_url)
        await accessible_names(page)
        await page.get_by_role("button", name=button).click()
        await page.wait_for_url(f"{MERCHANT_SITE}checkout/{landing}**")


async def merchant_webhook(
    checkout: CardCheckout, event_type: str, session_id: str
) -> dict[str, Any]:
    """The one ``event_type`` delivery for the session, its signatures verified."""

    def arrived() -> list[dict[str, Any]]:
        events = [verify(r, checkout.hook_secret) for r in checkout.hooks.at(HOOKS)]
        return [e for e in events if e["data"]["sessionId"] == session_id]

    await checkout.hooks.wait_for(lambda _: bool(arrived()), timeout=60)
    [event] = arrived()
    assert event["event_type"] == event_type
    return event


@pytest.mark.parametrize(
    ("button", "status", "landing", "event_type"),
    [
        ("Pay", "COMPLETED", "success", "card_session.completed"),
        ("Decline", "FAILED", "*", "card_session.failed"),
    ],
)
async def test_the_payer_decides_on_the_hosted_page_and_the_merchant_is_told(
    checkout: CardCheckout, button: str, status: str, landing: str, event_type: str
) -> None:
    created = await checkout.create()

    await pay_in_browser(created["checkoutUrl"], button, landing)

    shown = await checkout.until_status(created["sessionId"], status)
    assert shown["amount"]["total"] == "140.76"
    assert shown["routing"]["selectedProvider"] == created["routing"]["selectedProvider"]
    event = await merchant_webhook(checkout, event_type, created["sessionId"])
    assert event["data"]["status"] == status
    assert event["data"]["object"] == "card_session"
    assert event["data"]["amount"]["total"] == "140.76"


def score_of(session: Mapping[str, Any], provider: str) -> tuple[Decimal, Decimal]:
    """``provider``'s candidate score and availability component in a session's routing."""
    candidate = next(c for c in session["routing"]["candidates"] if c["provider"] == provider)
    availability = next(
        Decimal(c["value"]) for c in candidate["components"] if c["name"] == "availability"
    )
    return Decimal(str(candidate["score"])), availability


@pytest.mark.parametrize(
    ("mode", "attempt"), [("server_error", "failed"), ("timeout", "timed_out")]
)
async def test_a_winner_that_is_down_loses_the_session_and_scores_lower(
    checkout: CardCheckout, db: AsyncEngine, redis: Redis, mode: str, attempt: str
) -> None:
    # With no history every session ranks the providers alike: learn the head, then forget.
    first = await checkout.create()
    head = first["routing"]["selectedProvider"]
    fresh = await checkout.get(first["sessionId"])
    async with db.begin() as conn:
        await conn.execute(delete(card_route_stats))
    await redis.flushdb()
    await checkout.fail(head, mode, count=1)

    created = await checkout.create()

    winner = created["routing"]["selectedProvider"]
    assert winner != head
    shown = await checkout.get(created["sessionId"])
    assert [(a["provider"], a["status"]) for a in shown["attempts"]] == [
        (head, attempt),
        (winner, "created"),
    ]
    following = await checkout.get((await checkout.create())["sessionId"])
    before, after = score_of(fresh, head), score_of(following, head)
    assert after[1] < before[1], "availability"
    assert after[0] < before[0], "score"
    # The session still pays at the provider it failed over to.
    await pay_in_browser(created["checkoutUrl"], "Pay", "success")
    await checkout.until_status(created["sessionId"], "COMPLETED")
    await merchant_webhook(checkout, "card_session.completed", created["sessionId"])


@pytest.mark.parametrize("provider", ["stripe", "adyen", "paypal"])
async def test_every_providers_page_is_named_and_pays(
    checkout: CardCheckout, provider: str
) -> None:
    for other in checkout.providers.contexts:
        if other != provider:
            await checkout.fail(other, "server_error")

    created = await checkout.create()

    assert created["routing"]["selectedProvider"] == provider
    await pay_in_browser(created["checkoutUrl"], "Pay", "success")
    await checkout.until_status(created["sessionId"], "COMPLETED")
    await merchant_webhook(checkout, "card_session.completed", created["sessionId"])
