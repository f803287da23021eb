"""Shared by the api's component and integration tests: settings, the app in-process, seeding.

The app runs in-process (``httpx.ASGITransport``) with its real lifespan against the suite's
real Postgres, Redis and Kafka-protocol broker; nothing of ours is replaced.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import base58
import httpx
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins, Ed25519PublicKey
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin import service as admin
from pago.api.app import create_app
from pago.api.pricing.provider import RateProvider
from pago.api.settings import ApiSettings
from pago.api.state import ApiState
from pago.common.enums import ChainFamily, Mode, Token

MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
"""The BIP39 test vector; its addresses are public, which is the point (checkable)."""
_SEED = Bip39SeedGenerator(MNEMONIC).Generate()
_COINS = {ChainFamily.EVM: Bip44Coins.ETHEREUM, ChainFamily.TRON: Bip44Coins.TRON}


def account_xpub(family: ChainFamily, account: int) -> str:
    node = Bip44.FromSeed(_SEED, _COINS[family]).Purpose().Coin().Account(account)
    return str(node.PublicKey().ToExtended())


def derived_address(family: ChainFamily, account: int, index: int) -> str:
    """The address at ``m/44'/coin'/account'/0/index``, derived from the seed (private side)."""
    node = Bip44.FromSeed(_SEED, _COINS[family]).Purpose().Coin().Account(account)
    return str(node.Change(Bip44Changes.CHAIN_EXT).AddressIndex(index).PublicKey().ToAddress())


def solana_pubkeys(count: int) -> list[str]:
    keys: list[str] = []
    while len(keys) < count:
        raw = secrets.token_bytes(32)
        if Ed25519PublicKey.IsValidBytes(raw):
            keys.append(base58.b58encode(raw).decode())
    return keys


def api_settings(
    database_url: str, redis_url: str, kafka_bootstrap_servers: str, **overrides: Any
) -> ApiSettings:
    """Settings for tests: the environment is ignored; limits are high unless overridden."""
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "env": "test",
        "rate_limit_per_second": 100_000,
        "rate_limit_burst": 100_000,
        "ip_rate_limit_per_second": 100_000,
        "ip_rate_limit_burst": 100_000,
        "public_rate_limit_per_second": 100_000,
        "public_rate_limit_burst": 100_000,
        "api_metrics_port": 0,
        "run_outbox_relay": False,
        "db_pool_size": 5,
        # The pool monitor's reads would race the per-test TRUNCATE; tests run its pass directly.
        "address_pool_check_seconds": 0,
        **overrides,
    }
    return ApiSettings.model_validate(values)


@asynccontextmanager
async def running_app(
    settings: ApiSettings, *, rate_provider: RateProvider | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan started, and a client that talks to it in-process."""
    app = create_app(settings, rate_provider=rate_provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield app, client


@contextmanager
def services_replaced(app: FastAPI, **services: Any) -> Iterator[None]:
    """Run the started app with some of its services built otherwise (``webhook_endpoints=…``):
    the same lifespan, engine and clients, the ``ApiState`` it had restored after."""
    before: ApiState = app.state.pago
    app.state.pago = dataclasses.replace(before, **services)
    try:
        yield
    finally:
        app.state.pago = before


@dataclass
class Merchant:
    id: str
    name: str
    keys: dict[Mode, str]
    key_ids: dict[Mode, str]
    account: int
    sub_merchants: dict[str, str] = field(default_factory=dict)
    """code → id"""

    def headers(
        self,
        mode: Mode = Mode.TEST,
        *,
        sub: str | None = None,
        idempotency_key: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.keys[mode]}"}
        if sub is not None:
            headers["X-Sub-Merchant-Code"] = sub
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        headers.update(extra or {})
        return headers

    def xpub_account(self, mode: Mode) -> int:
        """Distinct merchants and modes derive from distinct BIP44 accounts."""
        return self.account * 2 + (0 if mode is Mode.TEST else 1)


async def seed_merchant(
    engine: AsyncEngine,
    settings: ApiSettings,
    *,
    name: str = "Acme Shop",
    account: int = 0,
    sub_merchants: tuple[str, ...] = ("shop-a", "shop-b"),
    xpub_families: tuple[ChainFamily, ...] = (ChainFamily.EVM, ChainFamily.TRON),
    solana_pool: int = 10,
    expiry_minutes: int = 30,
    logo_url: str | None = "https://acme.example/logo.png",
) -> Merchant:
    """A merchant with test and live keys, xpubs and a Solana pool, as an operator would set up."""
    pepper = settings.api_key_pepper.get_secret_value().encode() if settings.api_key_pepper else b""
    async with engine.begin() as conn:
        merchant_id = await admin.create_merchant(
            conn, name=name, logo_url=logo_url, expiry_minutes=expiry_minutes
        )
        merchant = Merchant(merchant_id, name, {}, {}, account)
        for mode in Mode:
            new = await admin.create_api_key(conn, merchant_id, mode=mode, pepper=pepper)
            merchant.keys[mode], merchant.key_ids[mode] = new.key, new.id
            for family in xpub_families:
                await admin.register_xpub(
                    conn,
                    merchant_id,
                    family=family,
                    mode=mode,
                    xpub=account_xpub(family, merchant.xpub_account(mode)),
                )
            if solana_pool:
                await admin.import_pool(
                    conn,
                    merchant_id,
                    family=ChainFamily.SOLANA,
                    mode=mode,
                    lines=solana_pubkeys(solana_pool),
                )
        for code in sub_merchants:
            merchant.sub_merchants[code] = await admin.create_sub_merchant(
                conn, merchant_id, code=code, name=f"{code} store"
            )
    return merchant


def crypto_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body; each call has its own ``client_reference_id`` unless one is given
    (the duplicate-order guard, on by default, answers a repeated one with its session)."""
    body: dict[str, Any] = {
        "pricing_amount": "10.50",
        "pricing_currency": "USDT",
        "currency": "USDT",
        "network": "TRON",
        "success_url": "https://acme.example/thanks",
        "cancel_url": "https://acme.example/cart",
        "client_reference_id": f"order-{secrets.token_hex(6)}",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    param: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """The response is the error envelope with this status and code (and param, if given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "code", "message", "param", "doc_url"}, error
    assert error["code"] == code, error
    assert error["message"], error
    if param is not None:
        assert error["param"] == param, error
    if error_type is not None:
        assert error["type"] == error_type, error
    assert "Traceback" not in response.text
    return error


TEST_RATES = {
    "USD": {Token.USDT: Decimal("0.99870000"), Token.USDC: Decimal("1.00010000")},
    "EUR": {Token.USDT: Decimal("0.86000000"), Token.USDC: Decimal("0.86100000")},
    "JPY": {Token.USDT: Decimal("155.12000000"), Token.USDC: Decimal("155.00000000")},
    "KRW": {Token.USDT: Decimal("1385.50000000"), Token.USDC: Decimal("1385.00000000")},
}
"""Fiat units per 1 token; USD is deliberately not 1 (no hard-coded peg)."""


SettingsFactory = Callable[..., ApiSettings]
