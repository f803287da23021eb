"""``pago-admin oauth-client`` and ``oauth-key``: run as an operator would, then used."""

from __future__ import annotations

import json

from joserfc import jwt
from joserfc.jwk import KeySet
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.oauth.principal import SCOPE_SESSIONS_WRITE
from pago.api.settings import ApiSettings
from pago.common.enums import Mode
from tests.integration.api.admin.test_admin_cli import admin, ok, refused
from tests.support.api import running_app

FORM = {"grant_type": "client_credentials"}


class TestOAuthClient:
    async def test_create_prints_id_and_secret_once_and_they_get_a_token_until_revoked(
        self, server_env: dict[str, str], settings: ApiSettings, db: AsyncEngine, redis: Redis
    ) -> None:
        merchant = ok(await admin(server_env, "merchant", "create", "--name", "Card Shop"))
        created = await admin(
            server_env,
            "oauth-client",
            "create",
            "--merchant",
            merchant,
            "--mode",
            "test",
            "--scope",
            SCOPE_SESSIONS_WRITE,
            script=True,
        )
        client_id, secret = ok(created).splitlines()
        assert client_id.startswith("cli_")
        assert secret.startswith("cs_")
        assert "shown only once" in created.stderr
        listed = json.loads(ok(await admin(server_env, "--json", "oauth-client", "list")))
        assert [(c["id"], c["mode"], c["scopes"], c["revoked_at"]) for c in listed] == [
            (client_id, "test", SCOPE_SESSIONS_WRITE, None)
        ]
        assert secret not in json.dumps(listed)
        assert listed[0]["secret_hint"] == f"{secret[:5]}…{secret[-4:]}"

        async with running_app(settings) as (app, client):
            response = await client.post("/oauth/token", data=FORM, auth=(client_id, secret))
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            principal = await app.state.pago.oauth.verify(token)
            assert (principal.client_id, principal.merchant_id, principal.mode) == (
                client_id,
                merchant,
                Mode.TEST,
            )
            assert principal.scopes == {SCOPE_SESSIONS_WRITE}

            rotated = ok(await admin(server_env, "oauth-key", "rotate"))
            keys = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
            kid = jwt.decode(token, keys).header["kid"]
            assert rotated != kid

            ok(await admin(server_env, "oauth-client", "revoke", client_id))
            response = await client.post("/oauth/token", data=FORM, auth=(client_id, secret))
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_client"

    async def test_create_refuses_unknown_merchants_and_scopes(
        self, server_env: dict[str, str], db: AsyncEngine
    ) -> None:
        args = ("oauth-client", "create", "--mode", "live")
        refused(await admin(server_env, *args, "--merchant", "mch_nope"), "mch_nope")
        merchant = ok(await admin(server_env, "merchant", "create", "--name", "Card Shop"))
        refused(
            await admin(server_env, *args, "--merchant", merchant, "--scope", "payouts:write"),
            "unknown scope",
        )

    async def test_create_external_registers_an_issuer_subject_once(
        self, server_env: dict[str, str], db: AsyncEngine
    ) -> None:
        merchant = ok(await admin(server_env, "merchant", "create", "--name", "Card Shop"))
        args = (
            "oauth-client",
            "create-external",
            "--merchant",
            merchant,
            "--mode",
            "live",
            "--issuer",
            "https://idp.example.test",
            "--subject",
            "svc-checkout",
        )
        created = await admin(server_env, *args)
        assert ok(created).startswith("cli_")
        assert "not in PAGO_OAUTH_TRUSTED_ISSUERS" in created.stderr
        refused(await admin(server_env, *args), "already exists")
