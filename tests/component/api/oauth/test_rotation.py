"""Signing-key rotation: scheduled and forced, across replicas, with old tokens still valid."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.oauth.keyring import Keyring, Lifetimes
from pago.api.oauth.settings import OAuthSettings
from pago.common.db.schema import oauth_signing_keys
from tests.component.api.oauth.support import Client

FORM = {"grant_type": "client_credentials"}
SECRET = b"pago-dev-only-oauth-key-secret-not-for-production"
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def lifetimes() -> Lifetimes:
    return Lifetimes.of(
        OAuthSettings.model_validate(
            {"oauth_key_rotation_days": 30, "oauth_jwks_max_age_seconds": 300}
        )
    )


async def kid_of(api: httpx.AsyncClient, client: Client) -> tuple[str, str]:
    response = await api.post("/oauth/token", data=FORM, headers=client.basic())
    token: str = response.json()["access_token"]
    return token, str(
        jwt.decode(token, _any_key(await api.get("/.well-known/jwks.json"))).header["kid"]
    )


def _any_key(response: httpx.Response) -> KeySet:
    return KeySet.import_key_set(response.json())


class TestForcedRotation:
    async def test_new_tokens_use_the_new_key_and_old_ones_still_verify(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client
    ) -> None:
        first = await app.state.pago.oauth.rotate_now()
        old_token, old_kid = await kid_of(api, oauth_client)
        assert old_kid == first
        second = await app.state.pago.oauth.rotate_now()
        new_token, new_kid = await kid_of(api, oauth_client)
        assert new_kid == second != first
        published = {k["kid"] for k in (await api.get("/.well-known/jwks.json")).json()["keys"]}
        assert published == {first, second}
        for token in (old_token, new_token):
            response = await api.get("/probe/any", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text

    async def test_another_replicas_key_is_found_by_its_kid(
        self, api: httpx.AsyncClient, app: FastAPI, oauth_client: Client, db: AsyncEngine
    ) -> None:
        await app.state.pago.oauth.rotate_now()
        token, _ = await kid_of(api, oauth_client)
        # pago-admin (another process) rotates, and another replica signs with the new key
        # before this one reloaded: the unknown kid makes this one look it up.
        async with db.begin() as conn:
            kid = await admin.rotate_oauth_key(conn, OAuthSettings())
        replica = await Keyring(db, secret=SECRET, lifetimes=lifetimes()).signer()
        assert replica.kid == kid
        claims = jwt.decode(token, _any_key(await api.get("/.well-known/jwks.json"))).claims
        theirs = jwt.encode({"alg": "ES256", "kid": kid, "typ": "at+jwt"}, claims, replica.key)
        response = await api.get("/probe/any", headers={"Authorization": f"Bearer {theirs}"})
        assert response.status_code == 200, response.text


class TestScheduledRotation:
    async def test_a_successor_is_published_before_it_signs_and_the_old_key_after(
        self, db: AsyncEngine
    ) -> None:
        clock = Clock()
        keyring = Keyring(db, secret=SECRET, lifetimes=lifetimes(), clock=clock)
        first = await keyring.signer()
        assert [k["kid"] for k in (await keyring.jwks())["keys"]] == [first.kid]

        clock.now += 30 * DAY  # rotation due: a successor, published 300 s before it signs
        assert (await keyring.signer()).kid == first.kid
        pending = [k["kid"] for k in (await keyring.jwks())["keys"]]
        assert len(pending) == 2
        assert pending[0] == first.kid
        second = pending[1]

        clock.now += 300
        assert (await keyring.signer()).kid == second
        # The old key's last tokens live 900 s (+ leeway 30 s + refresh 60 s): published till then.
        clock.now += 900 + 30 + 60 - 1
        assert [k["kid"] for k in (await keyring.jwks())["keys"]] == [first.kid, second]
        assert await keyring.verifying_key(first.kid) is not None
        clock.now += 2
        assert [k["kid"] for k in (await keyring.jwks())["keys"]] == [second]
        assert await keyring.verifying_key(first.kid) is None

    async def test_replicas_due_at_once_create_one_key(self, db: AsyncEngine) -> None:
        clock = Clock()
        replicas = [
            Keyring(db, secret=SECRET, lifetimes=lifetimes(), clock=clock) for _ in range(4)
        ]
        signers = await asyncio.gather(*(r.signer() for r in replicas))
        assert len({s.kid for s in signers}) == 1
        clock.now += 31 * DAY
        await asyncio.gather(*(r.signer() for r in replicas))
        async with db.connect() as conn:
            rows = (
                await conn.execute(select(oauth_signing_keys.c.kid, oauth_signing_keys.c.retire_at))
            ).all()
        assert len(rows) == 2
        assert sum(row.retire_at is not None for row in rows) == 1


class TestEncryptionSecret:
    async def test_keys_sealed_under_another_secret_are_skipped_and_replaced(
        self, db: AsyncEngine
    ) -> None:
        clock = Clock()
        before = await Keyring(db, secret=SECRET, lifetimes=lifetimes(), clock=clock).signer()
        clock.now += 1  # the secret changes with a deploy, not in the same microsecond
        changed = Keyring(db, secret=b"n" * 32, lifetimes=lifetimes(), clock=clock)
        after = await changed.signer()
        assert after.kid != before.kid
        assert [k["kid"] for k in (await changed.jwks())["keys"]] == [after.kid]
        assert await changed.verifying_key(before.kid) is None
