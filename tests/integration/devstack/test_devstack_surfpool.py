"""Surfpool with 6-decimal test mints; transfer_checked creates the recipient's ATA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from pago.devstack import DevStackError
from pago.devstack.surfpool import DEFAULT_PAYER_BALANCE_UNITS, Surfpool


@pytest.fixture(scope="module")
def surfpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surfpool]:
    with Surfpool.start(tmp_path_factory.mktemp("devstack-surfpool")) as node:
        yield node


async def test_mints_have_six_decimals(surfpool: Surfpool) -> None:
    assert set(surfpool.mints) == {"USDT", "USDC"}
    async with AsyncClient(surfpool.rpc_url, commitment=Confirmed) as client:
        for mint in surfpool.mints.values():
            supply = (await client.get_token_supply(Pubkey.from_string(mint))).value
            assert supply.decimals == 6


def test_payer_holds_each_mint(surfpool: Surfpool) -> None:
    if surfpool.external:
        pytest.skip("balances on an external cluster are whatever its operator minted")
    assert surfpool.payer is not None
    for symbol in surfpool.mints:
        assert surfpool.token_balance(symbol, surfpool.payer.pubkey()) == (
            DEFAULT_PAYER_BALANCE_UNITS
        )


async def test_transfer_checked_to_a_fresh_owner_creates_its_ata(surfpool: Surfpool) -> None:
    owner = Keypair().pubkey()
    ata = Pubkey.from_string(surfpool.associated_token_address("USDT", owner))
    async with AsyncClient(surfpool.rpc_url, commitment=Confirmed) as client:
        assert (await client.get_account_info(ata)).value is None

        signature = surfpool.transfer("USDT", str(owner), 2_500_000)

        balance = (await client.get_token_account_balance(ata)).value
        assert (balance.amount, balance.decimals) == ("2500000", 6)
        tx = await client.get_transaction(
            Signature.from_string(signature),
            encoding="jsonParsed",
            max_supported_transaction_version=0,
        )
        assert tx.value is not None
        parsed = tx.value.transaction.transaction.to_json()
        assert '"transferChecked"' in parsed

    # Idempotent ATA creation: a second payment to the same owner needs no setup either.
    surfpool.transfer("USDT", owner, 500_000)
    assert surfpool.token_balance("USDT", owner) == 3_000_000


def test_cheat_codes_run_in_node(surfpool: Surfpool) -> None:
    if surfpool.external:
        pytest.skip("cheat codes need the embedded surfnet")
    owner = Keypair().pubkey()
    ata = surfpool.cheat("getAta", str(owner), surfpool.mints["USDC"])
    assert ata == surfpool.associated_token_address("USDC", owner)
    with pytest.raises(DevStackError, match="unknown method"):
        surfpool.cheat("stop")


def test_amounts_must_be_int_base_units(surfpool: Surfpool) -> None:
    with pytest.raises(TypeError):
        surfpool.transfer("USDC", Keypair().pubkey(), 1.0)  # type: ignore[arg-type]


def test_external_cluster_requires_mints() -> None:
    with pytest.raises(DevStackError, match="PAGO_DEV_SOLANA_USDT and PAGO_DEV_SOLANA_USDC"):
        Surfpool.start(env={"PAGO_DEV_SOLANA_RPC_URL": "http://127.0.0.1:9"})
