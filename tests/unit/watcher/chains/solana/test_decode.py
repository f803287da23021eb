"""Decoding a ``getTransaction`` (``jsonParsed``) answer into credits, and the watcher's SOLANA
wiring. Pure: shapes as Agave and Surfpool answer them, no node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pago.watcher.chains.factory import build_source
from pago.watcher.chains.solana import SolanaSource, decode_transaction
from pago.watcher.settings import WatcherSettings

USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
MINTS = frozenset({USDT, USDC})


def _balance(index: int, mint: str, owner: str, amount: int) -> dict[str, Any]:
    return {
        "accountIndex": index,
        "mint": mint,
        "owner": owner,
        "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        "uiTokenAmount": {"amount": str(amount), "decimals": 6, "uiAmountString": "x"},
    }


def _tx(
    keys: list[str],
    pre: list[dict[str, Any]],
    post: list[dict[str, Any]],
    *,
    err: object = None,
    slot: int = 40,
) -> dict[str, Any]:
    return {
        "slot": slot,
        "meta": {"err": err, "preTokenBalances": pre, "postTokenBalances": post},
        "transaction": {
            "message": {
                "accountKeys": [{"pubkey": k, "signer": i == 0} for i, k in enumerate(keys)]
            }
        },
    }


KEYS = ["feePayer", "ataOfOwner", "payerAta", "otherAta", "tokenProgram"]


class TestDecode:
    def test_an_ata_created_in_the_transaction_has_no_pre_balance(self) -> None:
        tx = _tx(
            KEYS,
            pre=[_balance(2, USDT, "payer", 10_000_000)],
            post=[_balance(1, USDT, "owner", 2_500_000), _balance(2, USDT, "payer", 7_500_000)],
        )
        decoded = decode_transaction(tx, MINTS)
        assert decoded.ok
        ((credit),) = decoded.credits
        assert (credit.index, credit.account, credit.mint) == (1, "ataOfOwner", USDT)
        assert (credit.amount, credit.sender) == (2_500_000, "payer")
        assert type(credit.amount) is int

    def test_the_sender_is_the_owner_whose_balance_fell_most(self) -> None:
        tx = _tx(
            KEYS,
            pre=[
                _balance(1, USDT, "owner", 5),
                _balance(2, USDT, "big", 100),
                _balance(3, USDT, "small", 100),
            ],
            post=[
                _balance(1, USDT, "owner", 65),
                _balance(2, USDT, "big", 50),
                _balance(3, USDT, "small", 90),
            ],
        )
        ((credit),) = decode_transaction(tx, MINTS).credits
        assert (credit.amount, credit.sender) == (60, "big")

    def test_a_mint_to_has_the_fee_payer_as_sender(self) -> None:
        tx = _tx(KEYS, pre=[], post=[_balance(1, USDC, "owner", 9)])
        ((credit),) = decode_transaction(tx, MINTS).credits
        assert credit.sender == "feePayer"

    def test_debits_other_mints_and_failed_transactions_credit_nothing(self) -> None:
        debit = _tx(KEYS, pre=[_balance(1, USDT, "owner", 9)], post=[_balance(1, USDT, "owner", 2)])
        other = _tx(KEYS, pre=[], post=[_balance(1, "SomeOtherMint111", "owner", 9)])
        failed = _tx(
            KEYS, pre=[], post=[_balance(1, USDT, "owner", 9)], err={"InstructionError": [0, 1]}
        )
        assert decode_transaction(debit, MINTS).credits == ()
        assert decode_transaction(other, MINTS).credits == ()
        assert not decode_transaction(failed, MINTS).ok
        assert decode_transaction(failed, MINTS).credits == ()

    def test_two_mints_in_one_transaction_are_two_credits(self) -> None:
        tx = _tx(
            KEYS,
            pre=[_balance(2, USDT, "payer", 10), _balance(3, USDC, "payer", 10)],
            post=[
                _balance(1, USDT, "owner", 4),
                _balance(2, USDT, "payer", 6),
                _balance(3, USDC, "payer", 7),
                _balance(4, USDC, "owner", 3),
            ],
        )
        credits = decode_transaction(tx, MINTS).credits
        assert [(c.index, c.mint, c.amount) for c in credits] == [(1, USDT, 4), (4, USDC, 3)]

    def test_json_encoding_lists_loaded_addresses_after_the_static_keys(self) -> None:
        tx = {
            "slot": 7,
            "meta": {
                "err": None,
                "preTokenBalances": [],
                "postTokenBalances": [_balance(3, USDT, "owner", 5)],
                "loadedAddresses": {"writable": ["loadedAta"], "readonly": ["ro"]},
            },
            "transaction": {"message": {"accountKeys": ["feePayer", "a", "b"]}},
        }
        ((credit),) = decode_transaction(tx, MINTS).credits
        assert credit.account == "loadedAta"


class TestWiring:
    def _settings(self, tmp_path: Path, **over: object) -> WatcherSettings:
        chains = tmp_path / "chains.toml"
        chains.write_text(
            "[networks.SOLANA.test]\nrpc_urls = ['http://127.0.0.1:9']\n"
            f'[networks.SOLANA.test.tokens.USDT]\ncontract = "{USDT}"\ndecimals = 6\n'
        )
        values: dict[str, object] = {
            "network": "SOLANA",
            "mode": "test",
            "kafka_bootstrap_servers": "127.0.0.1:9",
            "redis_url": "redis://127.0.0.1:9",
            "chains_file": str(chains),
            **over,
        }
        return WatcherSettings.model_validate(values)

    def test_solana_confirms_at_finalized_unless_told_otherwise(self, tmp_path: Path) -> None:
        assert self._settings(tmp_path).confirm_finalized
        assert not self._settings(tmp_path, confirm_at="depth").confirm_finalized
        evm = self._settings(tmp_path, network="ETHEREUM")
        assert not evm.confirm_finalized, "EVM keeps its depth by default"

    async def test_the_factory_builds_a_solana_source(self, tmp_path: Path) -> None:
        source = build_source(self._settings(tmp_path, solana_rpc_budget=25))
        try:
            assert isinstance(source, SolanaSource)
            assert source.key_size == 32
            assert source.budget.rate == 25
            owner = "9dXN7R1SdPsTRbKMPy89q9EX5W85y3qXbK5uukpJLWhC"
            assert source.address_text(source.address_key(owner)) == owner
            with pytest.raises(ValueError, match="not a Solana address"):
                source.address_key("0x" + "ab" * 20)
        finally:
            await source.aclose()
