"""Deposit addresses: xpub derivation, pools, one live session per address, exhaustion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import base58
import httpx
import pytest
from bip_utils import Bip32Slip10Secp256k1, Bip39SeedGenerator
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.addresses.codec import (
    AddressError,
    derive_address,
    evm_checksum,
    normalize_address,
    random_address,
    validate_xpub,
)
from pago.api.admin import service as admin
from pago.api.settings import ApiSettings
from pago.common.db.schema import checkout_sessions, deposit_addresses
from pago.common.enums import ChainFamily, Mode
from tests.support.api import (
    MNEMONIC,
    Merchant,
    account_xpub,
    assert_error,
    crypto_body,
    derived_address,
    seed_merchant,
)

URL = "/v1/checkout/sessions"
EVM_POOL = [evm_checksum("0x" + f"{i:02x}" * 20) for i in (0x11, 0x22)]


async def create(client: httpx.AsyncClient, merchant: Merchant, network: str) -> httpx.Response:
    currency = "USDC" if network in ("SOLANA", "BASE", "POLYGON") else "USDT"
    body = crypto_body(network=network, currency=currency, pricing_currency=currency)
    return await client.post(URL, json=body, headers=merchant.headers())


class TestCodec:
    def test_eip55_vectors(self) -> None:
        for address in (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        ):
            assert evm_checksum(address.lower()) == address
            assert (
                normalize_address(ChainFamily.EVM, address.upper().replace("0X", "0x")) == address
            )

    @pytest.mark.parametrize(
        ("family", "text"),
        [
            (ChainFamily.EVM, "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),  # bad checksum
            (ChainFamily.EVM, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe"),
            (ChainFamily.TRON, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"),  # bad check bytes
            (ChainFamily.TRON, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            (ChainFamily.SOLANA, "0OIl"),
            (ChainFamily.SOLANA, base58.b58encode(b"\x01" * 31).decode()),
        ],
    )
    def test_invalid_addresses(self, family: ChainFamily, text: str) -> None:
        with pytest.raises(AddressError):
            normalize_address(family, text)

    def test_tron_address_is_base58check_of_0x41_and_20_bytes(self) -> None:
        raw = base58.b58decode_check("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")
        assert raw.hex() == "41a614f803b6fd780986a42c78ec9c7f77e6ded13c"
        for family in ChainFamily:
            address = random_address(family)
            assert normalize_address(family, address) == address

    def test_derivation_matches_the_wallet(self) -> None:
        for family in (ChainFamily.EVM, ChainFamily.TRON):
            xpub = account_xpub(family, 0)
            for index in (0, 1, 7):
                assert derive_address(xpub, family, index) == derived_address(family, 0, index)

    def test_only_account_level_public_keys_are_accepted(self) -> None:
        master = Bip32Slip10Secp256k1.FromSeed(Bip39SeedGenerator(MNEMONIC).Generate())
        for bad in (
            master.PublicKey().ToExtended(),  # depth 0
            master.PrivateKey().ToExtended(),
            "xpub-not-a-key",
        ):
            with pytest.raises(AddressError):
                validate_xpub(bad, ChainFamily.EVM)
        with pytest.raises(AddressError):
            validate_xpub(account_xpub(ChainFamily.EVM, 0), ChainFamily.SOLANA)


@pytest.fixture
async def evm_pool_merchant(db: AsyncEngine, settings: ApiSettings) -> Merchant:
    """EVM deposit addresses from a pool of two (no EVM xpub)."""
    merchant = await seed_merchant(
        db, settings, xpub_families=(ChainFamily.TRON,), solana_pool=1, account=3
    )
    async with db.begin() as conn:
        await admin.import_pool(
            conn, merchant.id, family=ChainFamily.EVM, mode=Mode.TEST, lines=EVM_POOL
        )
    return merchant


async def _lease_ends(db: AsyncEngine, address: str, when: datetime) -> None:
    async with db.begin() as conn:
        await conn.execute(
            update(deposit_addresses)
            .where(deposit_addresses.c.address == address)
            .values(leased_until=when)
        )


async def _cooled(db: AsyncEngine, address: str, *, days: int) -> None:
    """Move the end of ``address``'s last session (and its lease) ``days`` into the past."""
    async with db.begin() as conn:
        await conn.execute(
            update(deposit_addresses)
            .where(deposit_addresses.c.address == address)
            .values(
                released_at=deposit_addresses.c.released_at - timedelta(days=days),
                leased_until=deposit_addresses.c.leased_until - timedelta(days=days),
            )
        )


class TestPools:
    async def test_an_evm_address_is_never_live_on_two_sessions(
        self, client: httpx.AsyncClient, evm_pool_merchant: Merchant, db: AsyncEngine
    ) -> None:
        m = evm_pool_merchant
        first = (await create(client, m, "ETHEREUM")).json()
        second = (await create(client, m, "BSC")).json()
        assert {first["pay_address"], second["pay_address"]} == set(EVM_POOL)
        error = assert_error(await create(client, m, "POLYGON"), 503, "address_pool_exhausted")
        assert error["type"] == "api_error"
        # A lapsed lease whose session is still live (Pending) is not reused.
        await _lease_ends(db, first["pay_address"], datetime.now(UTC) - timedelta(hours=1))
        exhausted = await create(client, m, "BASE")
        assert_error(exhausted, 503, "address_pool_exhausted")
        assert int(exhausted.headers["retry-after"]) > 0
        # Expired but still inside its lease (late payments): not reused either.
        await client.post(f"{URL}/{second['id']}/expire", headers=m.headers())
        assert_error(await create(client, m, "BASE"), 503, "address_pool_exhausted")
        # Expired and past its lease, but its cool-down has just begun: still not reused.
        await client.post(f"{URL}/{first['id']}/expire", headers=m.headers())
        assert_error(await create(client, m, "BASE"), 503, "address_pool_exhausted")
        # Thirty days later (time moved in the database), the address comes back.
        await _cooled(db, first["pay_address"], days=31)
        again = await create(client, m, "BASE")
        assert again.status_code == 201, again.text
        assert again.json()["pay_address"] == first["pay_address"]
        async with db.connect() as conn:
            holder = (
                await conn.execute(
                    select(deposit_addresses.c.session_id, deposit_addresses.c.released_at).where(
                        deposit_addresses.c.address == first["pay_address"]
                    )
                )
            ).one()
        assert holder.session_id == again.json()["id"]
        assert holder.released_at is None  # leased again: its next cool-down starts at its end

    async def test_the_database_refuses_two_live_sessions_on_one_address(
        self, client: httpx.AsyncClient, evm_pool_merchant: Merchant, db: AsyncEngine
    ) -> None:
        live = (await create(client, evm_pool_merchant, "ETHEREUM")).json()
        async with db.connect() as conn:
            row = dict(
                (
                    await conn.execute(
                        select(checkout_sessions).where(checkout_sessions.c.id == live["id"])
                    )
                )
                .mappings()
                .one()
            )
        row.update(id="cs_duplicate", network="BSC")
        with pytest.raises(IntegrityError, match="uq_sessions_live_pay_address"):
            async with db.begin() as conn:
                await conn.execute(insert(checkout_sessions).values(**row))

    async def test_an_exhausted_solana_pool_is_503(
        self, client: httpx.AsyncClient, evm_pool_merchant: Merchant
    ) -> None:
        assert (await create(client, evm_pool_merchant, "SOLANA")).status_code == 201
        response = await create(client, evm_pool_merchant, "SOLANA")
        assert_error(response, 503, "address_pool_exhausted")

    async def test_no_xpub_and_no_pool_is_503(
        self, client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings
    ) -> None:
        bare = await seed_merchant(db, settings, xpub_families=(), solana_pool=0, account=4)
        for network in ("TRON", "ETHEREUM", "SOLANA"):
            assert_error(await create(client, bare, network), 503, "address_pool_exhausted")


class TestXpubs:
    async def test_replacing_an_xpub_with_itself_continues_the_indexes(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        account = merchant.xpub_account(Mode.TEST)
        for _ in range(2):
            await create(client, merchant, "TRON")
        async with db.begin() as conn:
            await admin.register_xpub(
                conn,
                merchant.id,
                family=ChainFamily.TRON,
                mode=Mode.TEST,
                xpub=account_xpub(ChainFamily.TRON, account),
                replace=True,
            )
        third = (await create(client, merchant, "TRON")).json()
        assert third["pay_address"] == derived_address(ChainFamily.TRON, account, 2)

    async def test_a_new_xpub_starts_at_index_zero(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        await create(client, merchant, "ETHEREUM")
        async with db.begin() as conn:
            await admin.register_xpub(
                conn,
                merchant.id,
                family=ChainFamily.EVM,
                mode=Mode.TEST,
                xpub=account_xpub(ChainFamily.EVM, 9),
                replace=True,
            )
        got = (await create(client, merchant, "ETHEREUM")).json()
        assert got["pay_address"] == derived_address(ChainFamily.EVM, 9, 0)
