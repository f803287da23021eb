"""What the SOLANA source reads out of JSON-RPC answers, without I/O: a transaction's credits of
the registry's mints, a token account's amount, a block's time.

Identity: ``tx_hash`` is the signature (base58); ``log_index`` is the index of the credited ATA
in the transaction's account keys (static keys, then loaded writable, then loaded read-only
addresses, as ``jsonParsed`` lists them), which every fetch of the transaction gives alike. One
transaction crediting one ATA twice is one transfer of the net amount.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pago.watcher.core.rpc import RpcError

AMOUNT_SLICE = {"offset": 64, "length": 8}
"""The token account's ``amount`` (u64 LE after mint and owner), the same in Token-2022."""
SOLANA_GENESIS = 1_584_368_940
"""Mainnet-beta's genesis (2020-03-16, unix seconds): no real block time is older."""


@dataclass(frozen=True, slots=True)
class Credit:
    """One token account's net gain of one registry mint in one transaction."""

    index: int
    """The account's index in the transaction's account keys (the transfer's log_index)."""
    account: str
    mint: str
    amount: int
    """Base units (post − pre); never a float."""
    sender: str


@dataclass(frozen=True, slots=True)
class DecodedTx:
    slot: int
    ok: bool
    credits: tuple[Credit, ...]


def decode_transaction(tx: Mapping[str, Any], mints: Collection[str]) -> DecodedTx:
    """The registry-mint credits of a ``getTransaction`` (``jsonParsed``) answer."""
    slot = int(tx["slot"])
    meta = tx.get("meta") or {}
    if meta.get("err") is not None:
        return DecodedTx(slot, False, ())
    keys = [k["pubkey"] if isinstance(k, dict) else str(k) for k in _account_keys(tx)]
    amounts: dict[int, list[int]] = {}
    mint_of: dict[int, str] = {}
    owner_of: dict[int, str] = {}
    for phase, entries in enumerate((meta.get("preTokenBalances"), meta.get("postTokenBalances"))):
        for entry in entries or ():
            mint = entry.get("mint")
            if mint not in mints:
                continue
            index = int(entry["accountIndex"])
            amounts.setdefault(index, [0, 0])[phase] = int(entry["uiTokenAmount"]["amount"])
            mint_of[index] = mint
            if entry.get("owner"):
                owner_of[index] = entry["owner"]
    credits = []
    for index, (pre, post) in sorted(amounts.items()):
        if post <= pre:
            continue
        mint = mint_of[index]
        fell = [
            (before - after, -other)
            for other, (before, after) in amounts.items()
            if mint_of[other] == mint and after < before
        ]
        if fell:
            payer = -max(fell)[1]
            sender = owner_of.get(payer, keys[payer])
        else:
            sender = keys[0]  # nothing fell (a mint): the fee payer sent it
        credits.append(Credit(index, keys[index], mint, post - pre, sender))
    return DecodedTx(slot, True, tuple(credits))


def _account_keys(tx: Mapping[str, Any]) -> list[Any]:
    message = tx["transaction"]["message"]
    keys = list(message["accountKeys"])
    if keys and isinstance(keys[0], dict):
        return keys  # jsonParsed lists loaded addresses too, in order
    loaded = (tx.get("meta") or {}).get("loadedAddresses") or {}
    return keys + list(loaded.get("writable", ())) + list(loaded.get("readonly", ()))


def token_amount(value: Mapping[str, Any]) -> int:
    """The ``amount`` of a token account read with ``dataSlice: AMOUNT_SLICE`` (base64)."""
    data = value.get("data")
    raw = base64.b64decode(data[0]) if isinstance(data, list) and data else b""
    if len(raw) != AMOUNT_SLICE["length"]:
        raise RpcError(f"a token account's amount is {len(raw)} bytes")
    return int.from_bytes(raw, "little")


def plausible(stamp: object) -> bool:
    """Whether a ``blockTime`` is a clock reading (not null, not before Solana's genesis)."""
    return isinstance(stamp, int) and stamp >= SOLANA_GENESIS
