"""API keys: 401 for missing/unknown/revoked, mode scoping, X-Sub-Merchant-Code."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.auth.keys import generate_key, hash_key, key_mode
from pago.common.db.schema import api_keys
from pago.common.enums import Mode
from tests.support.api import Merchant, assert_error, crypto_body

URL = "/v1/checkout/sessions"


class TestKeys:
    def test_format_is_prefix_and_24_random_bytes(self) -> None:
        key = generate_key(Mode.LIVE)
        assert key.startswith("sk_live_")
        assert len(key) == 8 + 48
        assert key_mode(key) is Mode.LIVE
        assert key_mode(generate_key(Mode.TEST)) is Mode.TEST
        assert generate_key(Mode.TEST) != generate_key(Mode.TEST)
        for bad in (
            "sk_test_",
            "sk_prod_" + "a" * 48,
            "sk_test_" + "A" * 48,
            "sk_test_" + "a" * 47,
        ):
            assert key_mode(bad) is None

    async def test_only_the_hmac_is_stored(self, merchant: Merchant, db: AsyncEngine) -> None:
        async with db.connect() as conn:
            rows = (await conn.execute(select(api_keys))).mappings().all()
        for row in rows:
            assert merchant.keys[Mode(row["mode"])] not in str(dict(row))
        key = merchant.keys[Mode.TEST]
        hashes = {bytes(r["key_hash"]) for r in rows}
        assert hash_key(b"pago-dev-only-pepper-not-for-production", key) in hashes


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer sk_test_nothex"},
            {"Authorization": "Bearer " + generate_key(Mode.TEST)},
            {"Authorization": "Bearer " + generate_key(Mode.LIVE)},
        ],
    )
    async def test_missing_malformed_or_unknown_is_401(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant, headers: dict[str, str]
    ) -> None:
        for response in (
            await app_client.get(URL, headers=headers),
            await app_client.post(URL, json=crypto_body(), headers=headers),
        ):
            error = assert_error(
                response, 401, "authentication_failed", error_type="authentication_error"
            )
            assert response.headers["www-authenticate"] == "Bearer"
            assert "sk_" not in error["message"] or "…" in error["message"]

    async def test_revoked_key_is_401_at_once(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        assert (await client.get(URL, headers=merchant.headers())).status_code == 200
        async with db.begin() as conn:
            await admin.revoke_api_key(conn, merchant.key_ids[Mode.TEST])
        error = assert_error(
            await client.get(URL, headers=merchant.headers()), 401, "authentication_failed"
        )
        assert "revoked" in error["message"]
        assert (await client.get(URL, headers=merchant.headers(Mode.LIVE))).status_code == 200

    async def test_scheme_is_case_insensitive(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        headers = {"Authorization": f"bearer {merchant.keys[Mode.TEST]}"}
        assert (await client.get(URL, headers=headers)).status_code == 200

    async def test_last_use_is_recorded(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        await client.get(URL, headers=merchant.headers(Mode.LIVE))
        for _ in range(50):
            async with db.connect() as conn:
                used = (
                    await conn.execute(
                        select(api_keys.c.last_used_at).where(
                            api_keys.c.id == merchant.key_ids[Mode.LIVE]
                        )
                    )
                ).scalar()
            if used is not None:
                return
            import asyncio

            await asyncio.sleep(0.02)
        raise AssertionError("last_used_at was never written")


class TestSubMerchantHeader:
    @pytest.mark.parametrize(
        "code", [b"nope", b"shop a", b"x" * 65, b"shop-a\t", "ünï".encode(), b"a\x00"]
    )
    async def test_unknown_or_malformed_code_is_400(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant, code: bytes
    ) -> None:
        headers = [(k.encode(), v.encode()) for k, v in shared_merchant.headers().items()]
        headers.append((b"X-Sub-Merchant-Code", code))
        for response in (
            await app_client.get(URL, headers=headers),
            await app_client.post(URL, json=crypto_body(), headers=headers),
        ):
            assert_error(response, 400, "invalid_sub_merchant_code", param="X-Sub-Merchant-Code")

    async def test_an_empty_header_means_absent(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        """Some clients send every header they know, empty when unused (as the document says:
        its pattern allows the empty string)."""
        headers = merchant.headers(extra={"X-Sub-Merchant-Code": ""})
        created = await client.post(URL, json=crypto_body(), headers=headers)
        assert created.status_code == 201, created.text
        assert created.json()["sub_merchant_code"] is None
        in_sub = await client.post(URL, json=crypto_body(), headers=merchant.headers(sub="shop-a"))
        assert in_sub.status_code == 201, in_sub.text
        listed = await client.get(URL, headers=headers)
        assert listed.status_code == 200, listed.text
        assert [s["id"] for s in listed.json()["data"]] == [created.json()["id"]]

    async def test_inactive_sub_merchant_is_400(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        async with db.begin() as conn:
            await admin.set_sub_merchant_active(conn, merchant.id, "shop-b", active=False)
        response = await client.post(
            URL, json=crypto_body(), headers=merchant.headers(sub="shop-b")
        )
        assert_error(response, 400, "invalid_sub_merchant_code")

    async def test_another_merchants_code_is_400(
        self, client: httpx.AsyncClient, merchant: Merchant, other_merchant: Merchant
    ) -> None:
        # other_merchant has only shop-a; shop-b exists under merchant.
        response = await client.get(URL, headers=other_merchant.headers(sub="shop-b"))
        assert_error(response, 400, "invalid_sub_merchant_code")
