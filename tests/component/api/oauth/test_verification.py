"""Bearer tokens on the card API: each claim checked, 401 or 403 as RFC 6750 says."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.oauth.keyring import SigningKey
from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE
from tests.component.api.oauth.support import Client, new_client
from tests.support.api import Merchant

TOKEN = "/oauth/token"


async def issued(api: httpx.AsyncClient, client: Client, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope is not None:
        form["scope"] = scope
    response = await api.post(TOKEN, data=form, headers=client.basic())
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(response: httpx.Response, message: str | None = None) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "authentication_failed")
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="pago", error="invalid_token"'
    )
    if message is not None:
        assert message in error["message"]


async def signer(app: FastAPI) -> SigningKey:
    key: SigningKey = await app.state.pago.oauth.keyring.signer()
    return key


def claims(client: Client, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "iss": "http://localhost:8000",
        "sub": client.client_id,
        "aud": "pago-card-api",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
        "scope": f"{SCOPE_SESSIONS_READ} {SCOPE_SESSIONS_WRITE}",
        "pago_merchant_id": client.merchant_id,
        "pago_mode": "test",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def signed(key: ECKey, kid: str, payload: dict[str, Any], typ: str = "at+jwt") -> str:
    return jwt.encode({"alg": "ES256", "kid": kid, "typ": typ}, payload, key)


class TestAccepted:
    async def test_a_token_from_the_endpoint_proves_its_client(
        self, api: httpx.AsyncClient, oauth_client: Client
    ) -> None:
        token = await issued(api, oauth_client)
        for path in ("/probe/write", "/probe/read", "/probe/any"):
            response = await api.get(path, headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json() == {
                "client_id": oauth_client.client_id,
                "merchant_id": oauth_client.merchant_id,
                "mode": "test",
                "scopes": [SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE],
                "issuer": "http://localhost:8000",
            }

    async def test_clock_skew_within_the_leeway_is_tolerated(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client
    ) -> None:
        key = await signer(app)
        now = int(time.time())
        skewed = claims(oauth_client, iat=now + 20, nbf=now + 20, exp=now - 20 + 900)
        response = await api.get("/probe/any", headers=bearer(signed(key.key, key.kid, skewed)))
        assert response.status_code == 200, response.text
        late = claims(oauth_client, iat=now - 920, nbf=now - 920, exp=now - 20)
        response = await api.get("/probe/any", headers=bearer(signed(key.key, key.kid, late)))
        assert response.status_code == 200, response.text


class TestRefused:
    async def test_no_token_is_401_without_an_error_code(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/probe/write")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "authentication_failed"
        assert response.headers["www-authenticate"] == 'Bearer realm="pago"'

    @pytest.mark.parametrize(
        "authorization",
        [
            "Bearer",
            "Bearer not-a-jwt",
            "Bearer a.b.c",
            "Basic dXNlcjpwYXNz",
            "Bearer sk_test_" + "a" * 48,
        ],
    )
    async def test_a_malformed_token_is_401(
        self, api: httpx.AsyncClient, authorization: str
    ) -> None:
        refused(await api.get("/probe/write", headers={"Authorization": authorization}))

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"exp": int(time.time()) - 120}, "expired"),
            ({"nbf": int(time.time()) + 120}, "not yet valid"),
            ({"iss": "https://evil.example"}, "issuer is not trusted"),
            ({"aud": "another-api"}, "aud"),
            ({"aud": None}, "aud"),
            ({"exp": None}, "exp"),
            ({"sub": None}, "sub"),
            ({"pago_merchant_id": None}, "merchant"),
            ({"pago_mode": "staging"}, "merchant"),
        ],
    )
    async def test_each_claim_is_checked(
        self,
        api: httpx.AsyncClient,
        app: FastAPI,
        oauth_client: Client,
        overrides: dict[str, Any],
        message: str,
    ) -> None:
        key = await signer(app)
        token = signed(key.key, key.kid, claims(oauth_client, **overrides))
        refused(await api.get("/probe/any", headers=bearer(token)), message)

    async def test_a_signature_by_another_key_is_401(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client
    ) -> None:
        key = await signer(app)
        impostor = ECKey.generate_key("P-256", private=True)
        forged = signed(impostor, key.kid, claims(oauth_client))  # a real kid, a wrong key
        refused(await api.get("/probe/any", headers=bearer(forged)), "signature")
        unknown = signed(impostor, "no-such-kid", claims(oauth_client))
        refused(await api.get("/probe/any", headers=bearer(unknown)), "not signed by")
        genuine = await issued(api, oauth_client)
        head, _payload, signature = genuine.split(".")
        tampered = signed(key.key, key.kid, claims(oauth_client, pago_merchant_id="mch_other"))
        spliced = ".".join([head, tampered.split(".")[1], signature])
        refused(await api.get("/probe/any", headers=bearer(spliced)), "signature")

    async def test_an_unsigned_or_symmetric_token_is_401(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client
    ) -> None:
        key = await signer(app)

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        header = part({"alg": "none", "kid": key.kid, "typ": "at+jwt"})
        none = f"{header}.{part(claims(oauth_client))}."
        refused(await api.get("/probe/any", headers=bearer(none)))

    async def test_a_token_of_another_type_is_401(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client
    ) -> None:
        key = await signer(app)
        id_token = signed(key.key, key.kid, claims(oauth_client), typ="JWT")
        refused(await api.get("/probe/any", headers=bearer(id_token)), "not an access token")

    async def test_a_missing_scope_is_403_insufficient_scope(
        self, api: httpx.AsyncClient, db: AsyncEngine, merchant: Merchant
    ) -> None:
        reader = await new_client(db, merchant, scopes=[SCOPE_SESSIONS_READ])
        token = await issued(api, reader)
        assert (await api.get("/probe/read", headers=bearer(token))).status_code == 200
        response = await api.get("/probe/write", headers=bearer(token))
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "insufficient_scope")
        assert response.headers["www-authenticate"] == (
            f'Bearer realm="pago", error="insufficient_scope", scope="{SCOPE_SESSIONS_WRITE}"'
        )
        narrowed = await issued(api, await new_client(db, merchant), scope=SCOPE_SESSIONS_READ)
        assert (await api.get("/probe/write", headers=bearer(narrowed))).status_code == 403
