"""The error envelope everywhere; OpenAPI and /docs; health and metrics endpoints."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from pago.api.settings import ApiSettings
from pago.common import asyncapi
from pago.common.events import SessionSnapshot
from tests.support.api import Merchant, assert_error, crypto_body, running_app


class TestEnvelope:
    @pytest.mark.parametrize(
        "path", ["/", "/v1/nope", "/v1/checkout/sessions/x/y/z", "/v2/checkout/sessions"]
    )
    async def test_unknown_routes_are_404(self, app_client: httpx.AsyncClient, path: str) -> None:
        error = assert_error(await app_client.get(path), 404, "resource_missing")
        assert error["type"] == "invalid_request_error"

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("DELETE", "/v1/checkout/sessions", "GET, POST"),
            ("PUT", "/v1/checkout/sessions/cs_1", "GET"),
            ("GET", "/v1/checkout/sessions/cs_1/expire", "POST"),
            ("POST", "/healthz", "GET"),
        ],
    )
    async def test_wrong_methods_are_405_with_allow(
        self, app_client: httpx.AsyncClient, method: str, path: str, allowed: str
    ) -> None:
        response = await app_client.request(method, path)
        assert_error(response, 405, "method_not_allowed")
        assert sorted(response.headers["allow"].split(", ")) == sorted(allowed.split(", "))

    async def test_malformed_json(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant
    ) -> None:
        headers = {**shared_merchant.headers(), "content-type": "application/json"}
        response = await app_client.post(
            "/v1/checkout/sessions", content=b"{'single': 'quotes'}", headers=headers
        )
        assert_error(response, 400, "invalid_json")

    async def test_a_body_over_the_limit_is_413(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant
    ) -> None:
        body = crypto_body(client_reference_id="x" * (2 << 20))
        response = await app_client.post(
            "/v1/checkout/sessions", json=body, headers=shared_merchant.headers()
        )
        assert_error(response, 413, "request_too_large")

    async def test_a_streamed_body_over_the_limit_is_413(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 65_536

        headers = {**shared_merchant.headers(), "content-type": "application/json"}
        for extra in ({}, {"Idempotency-Key": "big"}):
            response = await app_client.post(
                "/v1/checkout/sessions", content=chunks(), headers={**headers, **extra}
            )
            assert_error(response, 413, "request_too_large")

    async def test_form_bodies_are_refused_as_a_400(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant
    ) -> None:
        response = await app_client.post(
            "/v1/checkout/sessions",
            data={"pricing_amount": "10"},
            headers=shared_merchant.headers(),
        )
        assert 400 <= response.status_code < 500
        assert_error(response, response.status_code, response.json()["error"]["code"])

    async def test_doc_url_names_the_code_when_configured(self) -> None:
        from pago.api.errors import InvalidRequest, envelope_bytes

        body = envelope_bytes(InvalidRequest("bad", param="x"), "https://docs.example/errors")
        assert b'"doc_url":"https://docs.example/errors#parameter_invalid"' in body


class TestOpenApi:
    async def test_documents_every_endpoint_header_and_error(
        self, app_client: httpx.AsyncClient
    ) -> None:
        spec = (await app_client.get("/openapi.json")).json()
        paths = spec["paths"]
        assert set(paths) >= {
            "/v1/checkout/sessions",
            "/v1/checkout/sessions/{id}",
            "/v1/checkout/sessions/{id}/expire",
            "/v1/test_helpers/checkout/sessions/{id}/transfers",
            "/healthz",
            "/readyz",
        }
        assert "/metrics" not in paths
        create = paths["/v1/checkout/sessions"]["post"]
        headers = {p["name"] for p in create["parameters"] if p["in"] == "header"}
        assert headers == {"Idempotency-Key", "X-Sub-Merchant-Code"}
        # 410 session_expired (duplicate-order guard), 503 address_pool_exhausted included.
        assert set(create["responses"]) == {
            "201", "400", "401", "409", "410", "413", "429", "500", "503"
        }  # fmt: skip
        assert "session_expired" in create["responses"]["410"]["description"]
        assert "address_pool_exhausted" in create["responses"]["503"]["description"]
        sub_header = next(p for p in create["parameters"] if p["name"] == "X-Sub-Merchant-Code")
        pattern = re.compile(sub_header["schema"]["pattern"])
        assert pattern.match("")
        assert pattern.match("shop-a.eu_1")
        assert not pattern.match("shop a")
        assert not pattern.match("-x")
        key_header = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
        assert key_header["schema"]["minLength"] == 1
        assert "Idempotency-Replayed" in create["responses"]["201"]["headers"]
        for status in ("409", "429", "503"):
            assert "Retry-After" in create["responses"][status]["headers"]
        for path in paths.values():
            for operation in path.values():
                assert "422" not in operation["responses"]
                assert {"429", "500"} <= set(operation["responses"])
                if operation.get("security"):
                    assert {"400", "401", "503"} <= set(operation["responses"])
                names = {p["name"] for p in operation.get("parameters", [])}
                for status, response in operation["responses"].items():
                    if "Idempotency-Key" in names and status.startswith("2"):
                        assert "Idempotency-Replayed" in response["headers"]
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        # The token endpoint's own errors speak OAuth (RFC 6749 §5.2).
                        oauth = operation["operationId"] == "oauth_token" and status in (
                            "400",
                            "401",
                        )
                        assert ref.endswith("/TokenErrorResponse" if oauth else "/ErrorEnvelope")
        schemas = spec["components"]["schemas"]
        assert set(schemas["SessionSnapshot"]["properties"]) == set(SessionSnapshot.model_fields)
        assert set(schemas["ErrorBody"]["properties"]) == {
            "type",
            "code",
            "message",
            "param",
            "doc_url",
        }
        create_body = schemas["CreateSessionRequest"]["properties"]
        assert set(create_body) == {
            "pricing_amount", "pricing_currency", "currency", "network",
            "success_url", "cancel_url", "client_reference_id",
        }  # fmt: skip
        assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
        list_params = {p["name"] for p in paths["/v1/checkout/sessions"]["get"]["parameters"]}
        assert list_params >= {
            "page", "page_size", "status", "network", "created_after", "created_before",
            "search_text", "include_sub_merchants", "sub_merchant_code",
        }  # fmt: skip

    async def test_docs_render_it(self, app_client: httpx.AsyncClient) -> None:
        response = await app_client.get("/docs")
        assert response.status_code == 200
        assert "/openapi.json" in response.text
        assert "swagger" in response.text.lower()


class TestAsyncApi:
    async def test_the_event_contract_is_served_as_generated(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.get("/asyncapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == asyncapi.document()
        assert "/asyncapi" not in (await app_client.get("/openapi.json")).json()["paths"]

    async def test_the_page_renders_it(self, app_client: httpx.AsyncClient) -> None:
        response = await app_client.get("/asyncapi")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "AsyncApiStandalone" in response.text
        assert "checkout.sessions" in response.text


class TestOperations:
    async def test_liveness_and_readiness(self, app_client: httpx.AsyncClient) -> None:
        assert (await app_client.get("/healthz")).json() == {"status": "ok"}
        ready = await app_client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"},
        }

    async def test_metrics_count_requests_by_route_template_on_the_metrics_port_only(
        self, settings: ApiSettings, shared_merchant: Merchant
    ) -> None:
        async with running_app(settings) as (app, client):
            await client.get("/v1/checkout/sessions/cs_123", headers=shared_merchant.headers())
            public = await client.get("/metrics")
            assert_error(public, 404, "resource_missing")
            port = app.state.pago.metrics.port
            assert port != 0
            async with httpx.AsyncClient() as scraper:
                text = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'route="/v1/checkout/sessions/{id}"' in text
        assert "pago_api_request_seconds_bucket" in text
        assert "cs_123" not in text
