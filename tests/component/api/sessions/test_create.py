"""POST /v1/checkout/sessions: pricing, addresses, the session object, every validation rule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import base58
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.addresses.codec import evm_checksum
from pago.api.admin import service as admin
from pago.common.enums import ChainFamily, Mode, Network, Token
from pago.common.events import SessionSnapshot
from pago.common.networks import load_registry
from tests.support.api import Merchant, assert_error, crypto_body, derived_address

URL = "/v1/checkout/sessions"


async def create(
    client: httpx.AsyncClient, merchant: Merchant, body: Any, **headers: Any
) -> httpx.Response:
    return await client.post(URL, json=body, headers=merchant.headers(**headers))


def _ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


_LIVE_PAIRS = sorted(
    (network, token)
    for network, spec in load_registry().networks.items()
    for token in spec.mode(Mode.LIVE).tokens
)


class TestTestModeOffersEveryLivePair:
    """A merchant builds in test mode the integration it runs live: every network × token of
    live mode creates a test session (a placeholder test token where no testnet has one)."""

    @pytest.mark.parametrize(("network", "token"), _LIVE_PAIRS)
    async def test_a_live_pair_creates_a_test_session(
        self, client: httpx.AsyncClient, merchant: Merchant, network: Network, token: Token
    ) -> None:
        body = crypto_body(network=network.value, currency=token.value, pricing_currency=token)
        response = await create(client, merchant, body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert (created["network"], created["currency"], created["livemode"]) == (
            network.value,
            token.value,
            False,
        )
        spec = load_registry().token(network, Mode.TEST, token)
        assert spec is not None
        assert created["currency_contract"] == spec.contract

    async def test_usdt_on_polygon_is_payable_with_the_test_helper(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        body = crypto_body(network="POLYGON", currency="USDT", pricing_currency="USDT")
        session = (await create(client, merchant, body)).json()
        response = await client.post(
            f"/v1/test_helpers/checkout/sessions/{session['id']}/transfers",
            json={"amount": session["amount"]},
            headers=merchant.headers(),
        )
        assert response.status_code == 202, response.text
        event = response.json()
        assert (event["network"], event["token"], event["contract"]) == (
            "POLYGON",
            "USDT",
            session["currency_contract"],
        )


class TestCreateCrypto:
    async def test_returns_the_full_pending_session(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await create(client, merchant, crypto_body(client_reference_id="order-1"))
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == set(SessionSnapshot.model_fields)
        SessionSnapshot.model_validate(body)
        assert body["id"].startswith("cs_")
        assert body["livemode"] is False
        assert body["url"] == f"http://localhost:8000/checkout/{body['id']}"
        assert body["status"] == "Pending"
        assert body["amount"] == body["amount_expected"] == "10.5"
        assert (body["amount_received"], body["fee_amount"], body["net_amount"]) == ("0",) * 3
        assert body["currency"] == "USDT"
        assert body["currency_contract"] == "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
        assert (body["network"], body["chain_family"]) == ("TRON", "tron")
        assert body["merchant_name"] == "Acme Shop"
        assert body["merchant_logo_url"] == "https://acme.example/logo.png"
        assert body["pricing"] == {
            "currency": "USDT",
            "amount": "10.50",
            "exchange_rate": "1.00000000",
        }
        assert body["client_reference_id"] == "order-1"
        assert body["success_url"] == "https://acme.example/thanks"
        assert body["cancel_url"] == "https://acme.example/cart"
        assert body["sub_merchant_code"] is None
        assert body["transactions"] == []
        assert _ts(body["expires_at"]) - _ts(body["created_at"]) == timedelta(minutes=30)

    async def test_tron_address_is_the_next_xpub_child(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        account = merchant.xpub_account(Mode.TEST)
        for index in range(2):
            response = await create(client, merchant, crypto_body())
            address = response.json()["pay_address"]
            assert address == derived_address(ChainFamily.TRON, account, index)
            raw = base58.b58decode_check(address)
            assert len(raw) == 21
            assert raw[0] == 0x41

    async def test_evm_address_is_eip55_and_shared_by_the_family_sequence(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        account = merchant.xpub_account(Mode.TEST)
        addresses = []
        for network in ("ETHEREUM", "bsc", "Base"):
            response = await create(
                client,
                merchant,
                crypto_body(network=network, currency="USDC", pricing_currency="usdc"),
            )
            assert response.status_code == 201, response.text
            assert response.json()["network"] == network.upper()
            assert response.json()["chain_family"] == "evm"
            addresses.append(response.json()["pay_address"])
        assert addresses == [derived_address(ChainFamily.EVM, account, i) for i in range(3)]
        for address in addresses:
            assert address == evm_checksum(address)
            assert address != address.lower()

    async def test_solana_address_comes_from_the_pool(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        body = crypto_body(network="solana", currency="USDC", pricing_currency="USDC")
        response = await create(client, merchant, body)
        assert response.status_code == 201, response.text
        assert response.json()["chain_family"] == "solana"
        assert len(base58.b58decode(response.json()["pay_address"])) == 32

    async def test_live_key_creates_a_live_session_with_mainnet_contract(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await create(client, merchant, crypto_body(network="POLYGON"), mode=Mode.LIVE)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["livemode"] is True
        assert body["currency_contract"] == "0xc2132D05D31c914a87C6611C10748AEb04B58e8F"
        account = merchant.xpub_account(Mode.LIVE)
        assert body["pay_address"] == derived_address(ChainFamily.EVM, account, 0)

    @pytest.mark.parametrize("amount", ["1", "1.00", "10000000", "10000000.00", "0001.5"])
    async def test_bounds_are_inclusive(
        self, client: httpx.AsyncClient, merchant: Merchant, amount: str
    ) -> None:
        response = await create(client, merchant, crypto_body(pricing_amount=amount))
        assert response.status_code == 201, response.text
        assert response.json()["pricing"]["amount"] == amount

    async def test_bsc_amount_uses_18_decimals_exactly(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        body = crypto_body(network="BSC", pricing_amount="9999999.99")
        response = await create(client, merchant, body)
        assert response.json()["amount"] == "9999999.99"
        async with db.connect() as conn:
            from sqlalchemy import text

            units = (
                await conn.execute(text("SELECT amount_expected FROM checkout_sessions"))
            ).scalar()
        assert units == 999999999 * 10**16

    async def test_expiry_follows_the_merchant_setting(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        async with db.begin() as conn:
            await admin.update_merchant(conn, merchant.id, expiry_minutes=45)
        body = (await create(client, merchant, crypto_body())).json()
        assert _ts(body["expires_at"]) - _ts(body["created_at"]) == timedelta(minutes=45)

    async def test_sub_merchant_header_owns_the_session(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await create(client, merchant, crypto_body(), sub="shop-a")
        assert response.status_code == 201, response.text
        assert response.json()["sub_merchant_code"] == "shop-a"

    async def test_optional_fields_may_be_omitted_and_unknown_ones_are_ignored(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        body = {
            "pricing_amount": "5",
            "pricing_currency": "USDT",
            "currency": "USDT",
            "network": "TRON",
            "metadata": {"order": "x"},
        }
        response = await create(client, merchant, body)
        assert response.status_code == 201, response.text
        got = response.json()
        assert (got["success_url"], got["cancel_url"], got["client_reference_id"]) == (None,) * 3


class TestCreateFiat:
    @pytest.mark.parametrize(
        ("pricing", "currency", "network", "expected", "rate"),
        [
            # 100.00 / 0.9987 = 100.1301…, rounded up to the cent
            (("100.00", "USD"), "USDT", "TRON", "100.14", "0.99870000"),
            # 100 / 1.0001 = 99.990001: a hair over 99.99, so the customer pays 100
            (("100", "usd"), "USDC", "ETHEREUM", "100", "1.00010000"),
            # 10 / 0.86 = 11.6279…
            (("10.00", "EUR"), "USDT", "BSC", "11.63", "0.86000000"),
            # 1000 / 155.12 = 6.4466…; JPY has no decimals
            (("1000", "JPY"), "USDT", "TRON", "6.45", "155.12000000"),
            (("13855", "KRW"), "USDT", "TRON", "10", "1385.50000000"),
        ],
    )
    async def test_converts_at_the_provider_rate_rounding_up_to_the_cent(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        pricing: tuple[str, str],
        currency: str,
        network: str,
        expected: str,
        rate: str,
    ) -> None:
        body = crypto_body(
            pricing_amount=pricing[0],
            pricing_currency=pricing[1],
            currency=currency,
            network=network,
        )
        response = await create(client, merchant, body)
        assert response.status_code == 201, response.text
        got = response.json()
        assert got["amount"] == got["amount_expected"] == expected
        assert got["pricing"] == {
            "currency": pricing[1].upper(),
            "amount": pricing[0],
            "exchange_rate": rate,
        }

    @pytest.mark.parametrize(
        ("amount", "currency", "code"),
        [
            ("1000.5", "JPY", "parameter_invalid"),
            ("1385", "KRW", "amount_too_small"),  # 0.9996… USDT
            ("0.85", "EUR", "amount_too_small"),
            ("0.86", "EUR", None),  # exactly 1 USDT
            ("10.001", "USD", "parameter_invalid"),
            ("99999999999", "USD", "amount_too_large"),
        ],
    )
    async def test_fiat_amount_rules(
        self,
        client: httpx.AsyncClient,
        merchant: Merchant,
        amount: str,
        currency: str,
        code: str | None,
    ) -> None:
        response = await create(
            client, merchant, crypto_body(pricing_amount=amount, pricing_currency=currency)
        )
        if code is None:
            assert response.status_code == 201, response.text
        else:
            assert_error(response, 400, code, param="pricing_amount")

    async def test_a_fiat_without_a_configured_rate_is_503(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        body = crypto_body(pricing_amount="100", pricing_currency="GBP")
        assert_error(await create(client, merchant, body), 503, "exchange_rate_unavailable")


def _without(key: str) -> dict[str, Any]:
    body = crypto_body()
    del body[key]
    return body


class TestCreateValidation:
    @pytest.mark.parametrize("field", ["pricing_amount", "pricing_currency", "currency", "network"])
    async def test_missing_required_field(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant, field: str
    ) -> None:
        error = assert_error(
            await create(app_client, shared_merchant, _without(field)),
            400,
            "parameter_missing",
            param=field,
        )
        assert error["type"] == "invalid_request_error"

    @pytest.mark.parametrize(
        ("overrides", "param", "code"),
        [
            ({"pricing_amount": 10.5}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": 10}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": ""}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": "abc"}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": "-5"}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": "1e3"}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": " 10"}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": "10.555"}, "pricing_amount", "parameter_invalid"),
            ({"pricing_amount": "0.99"}, "pricing_amount", "amount_too_small"),
            ({"pricing_amount": "0"}, "pricing_amount", "amount_too_small"),
            ({"pricing_amount": "10000000.01"}, "pricing_amount", "amount_too_large"),
            ({"pricing_amount": "1" * 33}, "pricing_amount", "parameter_invalid"),
            ({"pricing_currency": "XYZ"}, "pricing_currency", "parameter_invalid"),
            ({"pricing_currency": "USDC"}, "pricing_currency", "parameter_invalid"),
            ({"pricing_currency": 5}, "pricing_currency", "parameter_invalid"),
            ({"currency": "DAI"}, "currency", "parameter_invalid"),
            ({"currency": None, "pricing_currency": "USD"}, "currency", "parameter_missing"),
            ({"network": "FANTOM"}, "network", "parameter_invalid"),
            ({"network": ["TRON"]}, "network", "parameter_invalid"),
            ({"success_url": "ftp://acme.example/x"}, "success_url", "parameter_invalid"),
            ({"success_url": "not a url"}, "success_url", "parameter_invalid"),
            ({"cancel_url": "https://"}, "cancel_url", "parameter_invalid"),
            ({"cancel_url": "https://a.example/" + "x" * 2048}, "cancel_url", "parameter_invalid"),
            ({"client_reference_id": "x" * 256}, "client_reference_id", "parameter_invalid"),
            ({"client_reference_id": "a\x00b"}, "client_reference_id", "parameter_invalid"),
            ({"client_reference_id": "\ud800"}, "client_reference_id", "parameter_invalid"),
            ({"client_reference_id": ""}, "client_reference_id", "parameter_invalid"),
        ],
    )
    async def test_invalid_field(
        self,
        app_client: httpx.AsyncClient,
        shared_merchant: Merchant,
        overrides: dict[str, Any],
        param: str,
        code: str,
    ) -> None:
        body = {**crypto_body(), **overrides}
        body = {k: v for k, v in body.items() if v is not None}
        # json.dumps escapes a lone surrogate (\ud800); httpx's encoder would refuse it.
        response = await app_client.post(
            URL,
            content=json.dumps(body),
            headers={**shared_merchant.headers(), "content-type": "application/json"},
        )
        assert_error(response, 400, code, param=param)

    async def test_usdc_on_tron_names_the_currency(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant
    ) -> None:
        body = crypto_body(currency="USDC", pricing_currency="USDC", network="TRON")
        error = assert_error(
            await create(app_client, shared_merchant, body),
            400,
            "parameter_invalid",
            param="currency",
        )
        assert "USDC" in error["message"]
        assert "TRON" in error["message"]

    @pytest.mark.parametrize(
        ("content", "code"),
        [(b'{"pricing_amount": ', "invalid_json"), (b"[1, 2]", "parameter_invalid")],
    )
    async def test_body_that_is_not_a_json_object(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant, content: bytes, code: str
    ) -> None:
        headers = {**shared_merchant.headers(), "content-type": "application/json"}
        response = await app_client.post(URL, content=content, headers=headers)
        error = assert_error(response, 400, code)
        assert error["param"] is None

    async def test_no_body(self, app_client: httpx.AsyncClient, shared_merchant: Merchant) -> None:
        response = await app_client.post(URL, headers=shared_merchant.headers())
        assert_error(response, 400, "parameter_missing")
