"""``make dev``'s pools never run dry, and nothing but development ever generates a key.

Before, the demo merchant's 200 Solana addresses were gone after a few hundred test sessions
and SOLANA answered 503 for a day. In development a pool below its low-water mark now refills
itself with fresh keys (kept only in the dev stack's directory); elsewhere Pago stays
watch-only and an empty pool is a 503.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bip_utils import EthAddrEncoder, Secp256k1PrivateKey
from solders.keypair import Keypair
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.addresses.codec import random_address
from pago.api.addresses.pool import PoolMonitor, PoolRefiller, refiller_for
from pago.api.admin import service as admin
from pago.common.db.schema import deposit_addresses
from pago.common.enums import ChainFamily, Mode
from pago.common.errors import ConfigError
from pago.common.settings import Environment
from tests.integration.api.addresses.support import create, created, pool_merchant
from tests.support.api import SettingsFactory, assert_error, running_app, seed_merchant


def saved_keys(directory: Path, merchant_id: str, family: str) -> dict[str, str]:
    """address → secret, as the dev stack keeps them."""
    path = directory / f"{merchant_id}.{family}.test.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["address"]: line["secret"] for line in lines}


async def pool_size(db: AsyncEngine, merchant_id: str, family: str) -> int:
    """Addresses of the merchant's test-mode pool of ``family``."""
    async with db.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(
                        deposit_addresses.c.merchant_id == merchant_id,
                        deposit_addresses.c.family == family,
                        deposit_addresses.c.mode == Mode.TEST.value,
                    )
                )
            ).scalar_one()
        )


class TestDevelopment:
    async def test_an_empty_pool_refills_on_the_request_path(
        self, db: AsyncEngine, make_settings: SettingsFactory, tmp_path: Path
    ) -> None:
        keys = tmp_path / "pool-keys"
        settings = make_settings(
            env="development", address_pool_refill_batch=8, dev_pool_keys_dir=str(keys)
        )
        async with running_app(settings) as (_, client):
            merchant = await pool_merchant(db, settings, 1)
            first = await created(client, merchant)
            second = await created(client, merchant)  # the imported one is taken: refill
            bare = await seed_merchant(
                db, settings, xpub_families=(), solana_pool=0, account=2, sub_merchants=()
            )
            # No pool at all is a configuration to fix, not one to conjure up.
            assert_error(await create(client, bare), 503, "address_pool_exhausted")
        assert second["pay_address"] != first["pay_address"]
        assert await pool_size(db, merchant.id, "solana") == 1 + 8
        saved = saved_keys(keys, merchant.id, "solana")
        assert len(saved) == 8
        assert second["pay_address"] in saved
        for address, secret in saved.items():  # a developer can sweep every one of them
            assert str(Keypair.from_base58_string(secret).pubkey()) == address
        [key_file] = keys.iterdir()
        assert (keys.stat().st_mode & 0o777, key_file.stat().st_mode & 0o777) == (0o700, 0o600)

    async def test_concurrent_creates_on_an_empty_pool_all_succeed(
        self, db: AsyncEngine, make_settings: SettingsFactory
    ) -> None:
        settings = make_settings(env="development", address_pool_refill_batch=3)
        async with running_app(settings) as (_, client):
            merchant = await pool_merchant(db, settings, 1)
            await created(client, merchant)
            # One create refills; the others wait for its commit and lease what it added (or
            # refill again once that is used up), never a 503 and never one address twice.
            responses = await asyncio.gather(*(create(client, merchant) for _ in range(5)))
        assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
        assert len({r.json()["pay_address"] for r in responses}) == 5

    async def test_the_monitor_tops_up_a_pool_below_its_low_water_mark(
        self, db: AsyncEngine, make_settings: SettingsFactory, tmp_path: Path
    ) -> None:
        settings = make_settings(env="development")
        merchant = await seed_merchant(
            db, settings, xpub_families=(ChainFamily.TRON,), solana_pool=3, sub_merchants=()
        )
        async with db.begin() as conn:
            await admin.import_pool(
                conn,
                merchant.id,
                family=ChainFamily.EVM,
                mode=Mode.TEST,
                lines=[random_address(ChainFamily.EVM)],
            )
        refiller = PoolRefiller(env=Environment.DEVELOPMENT, batch=5, keys_dir=str(tmp_path))
        monitor = PoolMonitor(
            db, cooldown=settings.address_cooldown, low_water=4, refiller=refiller
        )
        depths = {(d.family, d.mode): d for d in await monitor.check()}
        # Solana 3 < 4 and EVM 1 < 4 in test mode: each got 5 more. Live mode is never topped
        # up with generated keys, not even in development: real money goes to the merchant's.
        assert depths[("solana", "test")].available == 8
        assert depths[("evm", "test")].available == 6
        assert depths[("solana", "live")].available == 3
        for address, secret in saved_keys(tmp_path, merchant.id, "evm").items():
            public = Secp256k1PrivateKey.FromBytes(bytes.fromhex(secret)).PublicKey()
            assert EthAddrEncoder.EncodeKey(public) == address
        again = {(d.family, d.mode): d.available for d in await monitor.check()}
        assert again[("solana", "test")] == 8  # above the mark: left alone


class TestWatchOnly:
    async def test_outside_development_an_empty_pool_is_a_503_and_no_key_is_made(
        self, db: AsyncEngine, make_settings: SettingsFactory, tmp_path: Path
    ) -> None:
        for env in ("test", "production"):
            settings = make_settings(
                env=env,
                api_key_pepper="pepper-" + env,
                oauth_key_encryption_secret="an-oauth-key-secret-of-32-characters",
                dev_pool_keys_dir=str(tmp_path),
                # Production refuses the static table; no rate is fetched here.
                rate_provider="http",
            )
            assert refiller_for(settings, settings.env) is None
        with pytest.raises(ConfigError, match="only in development"):
            PoolRefiller(env=Environment.PRODUCTION, batch=1, keys_dir=None)
        settings = make_settings(env="test")
        async with running_app(settings) as (_, client):
            merchant = await pool_merchant(db, settings, 1)
            await created(client, merchant)
            assert_error(await create(client, merchant), 503, "address_pool_exhausted")
        assert await pool_size(db, merchant.id, "solana") == 1
        assert list(tmp_path.iterdir()) == []
