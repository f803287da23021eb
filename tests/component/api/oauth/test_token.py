"""``POST /oauth/token`` (RFC 6749 §4.4) and ``GET /.well-known/jwks.json``."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE
from pago.api.settings import ApiSettings
from pago.common.db.schema import oauth_clients, oauth_signing_keys
from tests.component.api.oauth.support import Client, new_client, probed_app
from tests.support.api import Merchant

TOKEN = "/oauth/token"
FORM = {"grant_type": "client_credentials"}


def oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    assert response.headers["cache-control"] == "no-store"
    return body


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    parsed: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return parsed


class TestIssue:
    async def test_basic_auth_gets_a_bearer_jwt_with_every_allowed_scope(
        self, api: httpx.AsyncClient, oauth_client: Client, merchant: Merchant
    ) -> None:
        response = await api.post(TOKEN, data=FORM, headers=oauth_client.basic())
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert body["scope"] == f"{SCOPE_SESSIONS_READ} {SCOPE_SESSIONS_WRITE}"
        keys = KeySet.import_key_set((await api.get("/.well-known/jwks.json")).json())
        token = jwt.decode(body["access_token"], keys, algorithms=["ES256"])
        assert token.header["typ"] == "at+jwt"
        claims = token.claims
        assert claims["iss"] == "http://localhost:8000"
        assert claims["aud"] == "pago-card-api"
        assert claims["sub"] == oauth_client.client_id
        assert claims["exp"] - claims["iat"] == 900
        assert claims["nbf"] == claims["iat"]
        assert claims["pago_merchant_id"] == merchant.id
        assert claims["pago_mode"] == "test"
        assert len(claims["jti"]) == 32

    async def test_form_credentials_work_too(
        self, api: httpx.AsyncClient, oauth_client: Client
    ) -> None:
        form = {**FORM, "client_id": oauth_client.client_id, "client_secret": oauth_client.secret}
        response = await api.post(TOKEN, data=form)
        assert response.status_code == 200, response.text
        assert claims_of(response.json()["access_token"])["sub"] == oauth_client.client_id

    async def test_a_requested_subset_of_scopes_is_what_is_granted(
        self, api: httpx.AsyncClient, oauth_client: Client
    ) -> None:
        response = await api.post(
            TOKEN, data={**FORM, "scope": SCOPE_SESSIONS_READ}, headers=oauth_client.basic()
        )
        assert response.json()["scope"] == SCOPE_SESSIONS_READ
        assert claims_of(response.json()["access_token"])["scope"] == SCOPE_SESSIONS_READ

    @pytest.mark.parametrize("scope", ["sessions:admin", f"{SCOPE_SESSIONS_WRITE} payouts", " "])
    async def test_a_scope_beyond_the_allowed_is_invalid_scope(
        self, api: httpx.AsyncClient, db: AsyncEngine, merchant: Merchant, scope: str
    ) -> None:
        client = await new_client(db, merchant, scopes=[SCOPE_SESSIONS_WRITE])
        response = await api.post(TOKEN, data={**FORM, "scope": scope}, headers=client.basic())
        oauth_error(response, 400, "invalid_scope")
        narrower = await api.post(
            TOKEN, data={**FORM, "scope": SCOPE_SESSIONS_READ}, headers=client.basic()
        )
        oauth_error(narrower, 400, "invalid_scope")

    async def test_a_wrong_secret_or_unknown_client_is_invalid_client_401(
        self, api: httpx.AsyncClient, oauth_client: Client, db: AsyncEngine, merchant: Merchant
    ) -> None:
        other = await new_client(db, merchant)
        flipped = "B" if oauth_client.secret.endswith("A") else "A"
        for client_id, secret in (
            (oauth_client.client_id, other.secret),  # someone else's secret
            (oauth_client.client_id, oauth_client.secret[:-1] + flipped),
            ("cli_000000000000000000000000", oauth_client.secret),
            (oauth_client.client_id, "hunter2"),
        ):
            wrong = Client(client_id, secret, merchant.id)
            response = await api.post(TOKEN, data=FORM, headers=wrong.basic())
            oauth_error(response, 401, "invalid_client")
            assert response.headers["www-authenticate"] == 'Basic realm="pago"'
            posted = await api.post(
                TOKEN, data={**FORM, "client_id": client_id, "client_secret": secret}
            )
            oauth_error(posted, 401, "invalid_client")
        oauth_error(await api.post(TOKEN, data=FORM), 401, "invalid_client")

    async def test_a_revoked_client_gets_no_token(
        self, api: httpx.AsyncClient, oauth_client: Client, db: AsyncEngine
    ) -> None:
        assert (await api.post(TOKEN, data=FORM, headers=oauth_client.basic())).status_code == 200
        async with db.begin() as conn:
            await admin.revoke_oauth_client(conn, oauth_client.client_id)
        response = await api.post(TOKEN, data=FORM, headers=oauth_client.basic())
        oauth_error(response, 401, "invalid_client")

    @pytest.mark.parametrize(
        ("form", "error"),
        [
            (
                {"grant_type": "password", "username": "a", "password": "b"},
                "unsupported_grant_type",
            ),
            ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
            ({}, "invalid_request"),
            ({"grant_type": ""}, "invalid_request"),
        ],
    )
    async def test_another_grant_is_refused(
        self, api: httpx.AsyncClient, oauth_client: Client, form: dict[str, str], error: str
    ) -> None:
        response = await api.post(TOKEN, data=form, headers=oauth_client.basic())
        oauth_error(response, 400, error)

    async def test_malformed_requests_are_invalid_request(
        self, api: httpx.AsyncClient, oauth_client: Client
    ) -> None:
        as_json = await api.post(TOKEN, json=FORM, headers=oauth_client.basic())
        oauth_error(as_json, 400, "invalid_request")
        repeated = await api.post(
            TOKEN,
            content=b"grant_type=client_credentials&grant_type=client_credentials",
            headers={**oauth_client.basic(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        oauth_error(repeated, 400, "invalid_request")
        unknown = await api.post(
            TOKEN,
            content=b"grant_type=client_credentials&x=1&x=2&resource=urn:a",
            headers={**oauth_client.basic(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert unknown.status_code == 200, "unrecognized parameters are ignored (RFC 6749 3.1)"
        both = await api.post(
            TOKEN,
            data={**FORM, "client_secret": oauth_client.secret},
            headers=oauth_client.basic(),
        )
        oauth_error(both, 400, "invalid_request")

    async def test_only_hashes_and_sealed_keys_are_stored(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client, db: AsyncEngine
    ) -> None:
        await app.state.pago.oauth.rotate_now()  # this test's database holds the signing key
        await api.post(TOKEN, data=FORM, headers=oauth_client.basic())
        async with db.connect() as conn:
            clients = (await conn.execute(select(oauth_clients))).mappings().all()
            keys = (await conn.execute(select(oauth_signing_keys))).mappings().all()
        assert oauth_client.secret not in str([dict(r) for r in clients])
        assert len(keys) == 1
        for key in keys:
            assert b"PRIVATE KEY" not in bytes(key["private_key"])
            assert "d" not in key["public_jwk"]


class TestJwks:
    async def test_publishes_public_keys_only_and_is_cacheable(
        self, api: httpx.AsyncClient, oauth_client: Client
    ) -> None:
        token = (await api.post(TOKEN, data=FORM, headers=oauth_client.basic())).json()
        response = await api.get("/.well-known/jwks.json")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=300"
        keys = response.json()["keys"]
        kid = jwt.decode(token["access_token"], KeySet.import_key_set({"keys": keys})).header["kid"]
        assert kid in {k["kid"] for k in keys}
        for key in keys:
            assert key["kty"] == "EC"
            assert key["crv"] == "P-256"
            assert key["alg"] == "ES256"
            assert "d" not in key


class TestRateLimit:
    async def test_the_token_endpoint_is_limited_per_client_ip(
        self, settings: ApiSettings, db: AsyncEngine, redis: Redis, merchant: Merchant
    ) -> None:
        limited = settings.model_copy(
            update={"public_rate_limit_per_second": 0.001, "public_rate_limit_burst": 2}
        )
        client = await new_client(db, merchant)
        async with probed_app(limited) as (_, api):
            for _ in range(2):
                ok = await api.post(TOKEN, data=FORM, headers=client.basic())
                assert ok.status_code == 200, ok.text
            response = await api.post(TOKEN, data=FORM, headers=client.basic())
            assert response.status_code == 429
            assert response.json()["error"]["code"] == "rate_limited"
            assert int(response.headers["retry-after"]) >= 1
            assert (await api.get("/.well-known/jwks.json")).status_code == 429
