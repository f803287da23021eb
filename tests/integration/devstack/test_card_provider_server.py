"""The local card-provider server as ``make dev`` runs it: one port, control, health, stop."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from pago.devstack.cardproviders.context import FailureMode
from pago.devstack.cardproviders.server import DEV_SECRETS, CardProviderServer, default_providers
from pago.devstack.stack import DevStack


def accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def test_the_dev_stack_runs_it_and_exports_the_api_settings(tmp_path: Path) -> None:
    stack = DevStack(
        workdir=tmp_path, postgres=False, redis=False, kafka=False, anvil=False, solana=False,
        card_providers=True, card_webhook_base_url="http://127.0.0.1:8000",
    )  # fmt: skip
    with stack:
        server = stack.card_provider_server
        assert server is not None
        env = stack.env_vars()
        assert env["PAGO_CARD_STRIPE_BASE_URL"] == f"{server.base_url}/stripe"
        assert env["PAGO_CARD_STRIPE_API_KEY"] == DEV_SECRETS["stripe"]["api_key"]
        assert env["PAGO_CARD_STRIPE_WEBHOOK_SECRET"] == DEV_SECRETS["stripe"]["webhook_secret"]
        assert server.contexts["stripe"].webhook_url == (
            "http://127.0.0.1:8000/api/v1/webhooks/stripe"
        )
        assert stack.describe()["card_providers"]["providers"]["stripe"] == server.url("stripe")
        health = httpx.get(f"{server.base_url}/healthz").json()
        assert "stripe" in health["providers"]
        base = server.base_url
    assert stack.card_provider_server is None
    assert not accepts(base)


def test_every_provider_module_present_is_mounted() -> None:
    assert "stripe" in default_providers()


def test_failure_modes_are_set_over_http() -> None:
    with CardProviderServer() as server:
        stripe = server.contexts["stripe"]
        for path in ("/_control/stripe", "/stripe/_control"):
            answer = httpx.post(
                f"{server.base_url}{path}", json={"mode": "rate_limited", "count": 2}
            )
            assert answer.status_code == 200
            assert (stripe.faults.mode, stripe.faults.remaining) == (FailureMode.RATE_LIMITED, 2)
            httpx.post(f"{server.base_url}{path}", json={"mode": "ok"})
            assert stripe.faults.mode is FailureMode.OK
        assert httpx.post(f"{server.base_url}/_control/nope", json={}).status_code == 404
        bad = httpx.post(f"{server.base_url}/_control/stripe", json={"mode": "on fire"})
        assert bad.status_code == 400
        assert stripe.faults.mode is FailureMode.OK


def test_a_capture_failure_mode_leaves_the_creates_alone() -> None:
    with CardProviderServer() as server:
        paypal = server.contexts["paypal"]
        answer = httpx.post(
            f"{server.base_url}/_control/paypal",
            json={"mode": "server_error", "count": 1, "call": "capture"},
        )
        assert answer.status_code == 200
        assert (paypal.capture_faults.mode, paypal.capture_faults.remaining) == (
            FailureMode.SERVER_ERROR,
            1,
        )
        assert paypal.faults.mode is FailureMode.OK
        bad = httpx.post(
            f"{server.base_url}/_control/paypal", json={"mode": "ok", "call": "refund"}
        )
        assert bad.status_code == 400
        assert paypal.capture_faults.mode is FailureMode.SERVER_ERROR
