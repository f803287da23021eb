"""A trusted external OIDC issuer: its JWKS fetched over HTTP, its tokens mapped to a client."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE
from pago.api.settings import ApiSettings
from pago.common.enums import Mode
from tests.component.api.oauth.support import (
    EXTERNAL_AUDIENCE,
    EXTERNAL_ISSUER,
    IssuerServer,
    probed_app,
    serving,
)
from tests.support.api import Merchant

SUBJECT = "svc-checkout@merchant"


def token(key: RSAKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": EXTERNAL_ISSUER,
        "sub": SUBJECT,
        "aud": EXTERNAL_AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def idp() -> AsyncIterator[IssuerServer]:
    """A fresh issuer per test, so its fetch count starts at zero."""
    async with serving(IssuerServer()) as server:
        server.add_key()
        yield server


@pytest.fixture
async def idp_api(
    settings: ApiSettings, idp: IssuerServer, db: AsyncEngine, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    trusted = {EXTERNAL_ISSUER: {"jwks_url": idp.url, "audience": EXTERNAL_AUDIENCE}}
    configured = ApiSettings.model_validate(
        {
            **settings.model_dump(),
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "oauth_trusted_issuers": trusted,
            "oauth_external_jwks_min_refetch_seconds": 3600.0,
        }
    )
    async with probed_app(configured) as (_, client):
        yield client


@pytest.fixture
async def registered(db: AsyncEngine, merchant: Merchant) -> str:
    async with db.begin() as conn:
        made = await admin.create_external_oauth_client(
            conn,
            merchant.id,
            mode=Mode.LIVE,
            issuer=EXTERNAL_ISSUER,
            subject=SUBJECT,
            scopes=[SCOPE_SESSIONS_WRITE],
        )
    return made.client_id


class TestExternalIssuer:
    async def test_its_token_proves_the_registered_client(
        self, idp_api: httpx.AsyncClient, idp: IssuerServer, registered: str, merchant: Merchant
    ) -> None:
        response = await idp_api.get("/probe/write", headers=bearer(token(idp.keys[0])))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "client_id": registered,
            "merchant_id": merchant.id,
            "mode": "live",
            "scopes": [SCOPE_SESSIONS_WRITE],
            "issuer": EXTERNAL_ISSUER,
        }
        again = await idp_api.get("/probe/write", headers=bearer(token(idp.keys[0])))
        assert again.status_code == 200
        assert idp.fetches == 1, "the JWKS is cached"

    async def test_its_scope_claim_narrows_the_clients_scopes(
        self, idp_api: httpx.AsyncClient, idp: IssuerServer, registered: str
    ) -> None:
        narrowed = token(idp.keys[0], scope=SCOPE_SESSIONS_READ)
        assert (await idp_api.get("/probe/write", headers=bearer(narrowed))).status_code == 403
        # sessions:read is in the token, not in the client's allowed scopes: not granted.
        assert (await idp_api.get("/probe/read", headers=bearer(narrowed))).status_code == 403

    @pytest.mark.parametrize(
        "overrides",
        [
            {"aud": "pago-card-api"},
            {"sub": "someone-else"},
            {"exp": int(time.time()) - 120},
            {"nbf": int(time.time()) + 120},
        ],
    )
    async def test_a_wrong_claim_or_an_unregistered_subject_is_401(
        self,
        idp_api: httpx.AsyncClient,
        idp: IssuerServer,
        registered: str,
        overrides: dict[str, Any],
    ) -> None:
        response = await idp_api.get("/probe/any", headers=bearer(token(idp.keys[0], **overrides)))
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_a_revoked_client_is_refused_at_once(
        self, idp_api: httpx.AsyncClient, idp: IssuerServer, registered: str, db: AsyncEngine
    ) -> None:
        value = token(idp.keys[0])
        assert (await idp_api.get("/probe/any", headers=bearer(value))).status_code == 200
        async with db.begin() as conn:
            await admin.revoke_oauth_client(conn, registered)
        assert (await idp_api.get("/probe/any", headers=bearer(value))).status_code == 401

    async def test_a_key_rotation_at_the_issuer_refetches_once_per_interval(
        self, idp_api: httpx.AsyncClient, idp: IssuerServer, registered: str
    ) -> None:
        assert (
            await idp_api.get("/probe/any", headers=bearer(token(idp.keys[0])))
        ).status_code == 200
        assert idp.fetches == 1
        rotated = idp.add_key()
        response = await idp_api.get("/probe/any", headers=bearer(token(rotated)))
        assert response.status_code == 200, response.text
        assert idp.fetches == 2, "the unknown kid refetched the JWKS"
        stranger = RSAKey.generate_key(2048, auto_kid=True)
        for _ in range(3):
            response = await idp_api.get("/probe/any", headers=bearer(token(stranger)))
            assert response.status_code == 401
        assert idp.fetches == 2, "unknown kids refetch at most once per interval"

    async def test_a_key_of_another_issuer_is_refused(
        self, idp_api: httpx.AsyncClient, idp: IssuerServer, registered: str
    ) -> None:
        forged = RSAKey.generate_key(2048, {"kid": str(idp.keys[0].kid)}, private=True)
        response = await idp_api.get("/probe/any", headers=bearer(token(forged)))
        assert response.status_code == 401


class TestSessionIssuer:
    """The session-wide app trusts the session's issuer server too (one fetch for all)."""

    async def test_an_untrusted_issuer_is_401(
        self, api: httpx.AsyncClient, app: FastAPI, issuer: IssuerServer
    ) -> None:
        key = issuer.add_key()
        response = await api.get(
            "/probe/any", headers=bearer(token(key, iss="https://unknown-idp.example"))
        )
        assert response.status_code == 401
        assert "not trusted" in response.json()["error"]["message"]
