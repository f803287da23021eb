"""Address formats per chain family (pure): derive, validate, normalize, and make test values.

- EVM: ``0x`` + 40 hex, shown EIP-55 checksummed; mixed-case input must carry a valid checksum.
- TRON: base58check of ``0x41`` ‖ 20 bytes (``T…``).
- Solana: base58 of a 32-byte ed25519 public key (the owner; token accounts derive from it).

EVM and TRON derive from an *account-level* xpub (``m/44'/60'/0'`` and ``m/44'/195'/0'``): the
address at index ``i`` is ``<account>/0/i``, the BIP44 external chain, with no private key.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import Any

import base58

from pago.common.enums import ChainFamily

# bip_utils takes about a second to import (every coin it knows): it is imported where it is
# used, so that admin commands which never touch an address start fast.

MAX_INDEX = 2**31 - 1
"""The last non-hardened BIP32 child index."""

_COIN_NAMES = {ChainFamily.EVM: "ETHEREUM", ChainFamily.TRON: "TRON"}
_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_ACCOUNT_DEPTH = 3


class AddressError(ValueError):
    """Not a valid address (or xpub) for the chain family."""


def preload() -> None:
    """Import bip_utils now (a server's start-up) rather than in its first request."""
    import bip_utils  # noqa: F401


def derivable(family: ChainFamily) -> bool:
    return family in _COIN_NAMES


@lru_cache(maxsize=256)
def _account(xpub: str, family: ChainFamily) -> Any:
    """The parsed account node (``bip_utils.Bip44``), cached: parsing costs ~0.2 ms."""
    from bip_utils import Bip44, Bip44Coins

    if family not in _COIN_NAMES:
        raise AddressError(f"{family} addresses cannot be derived from an xpub")
    try:
        account = Bip44.FromExtendedKey(xpub, getattr(Bip44Coins, _COIN_NAMES[family]))
    except Exception as exc:  # bip_utils raises several unrelated types for a bad key
        raise AddressError(f"not a valid extended public key ({exc})") from None
    if account.Bip32Object().Depth() != _ACCOUNT_DEPTH:
        raise AddressError(
            "the xpub must be account-level (depth 3, m/44'/coin'/account'), "
            f"not depth {int(account.Bip32Object().Depth())}"
        )
    if not account.IsPublicOnly():
        raise AddressError("give the extended *public* key, never a private one")
    return account


def validate_xpub(xpub: str, family: ChainFamily) -> None:
    _account(xpub, family)


def derive_address(xpub: str, family: ChainFamily, index: int) -> str:
    from bip_utils import Bip44Changes

    if not 0 <= index <= MAX_INDEX:
        raise AddressError(f"derivation index {index} is out of range")
    child = _account(xpub, family).Change(Bip44Changes.CHAIN_EXT).AddressIndex(index)
    address: str = child.PublicKey().ToAddress()
    return address


def evm_checksum(address: str) -> str:
    """EIP-55 form of ``0x`` + 40 hex characters."""
    from bip_utils import Kekkak256

    lower = address[2:].lower()
    digest = Kekkak256.QuickDigest(lower.encode()).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(lower)
    )


def normalize_address(family: ChainFamily, text: str) -> str:
    """The canonical form of an address of ``family``; ``AddressError`` if it is not one."""
    from bip_utils import Ed25519PublicKey

    if family is ChainFamily.EVM:
        if not _EVM.fullmatch(text):
            raise AddressError("an EVM address is 0x followed by 40 hex characters")
        checksummed = evm_checksum(text)
        body = text[2:]
        if body != body.lower() and body != body.upper() and text != checksummed:
            raise AddressError("the EIP-55 checksum (letter case) does not match")
        return checksummed
    if family is ChainFamily.TRON:
        try:
            raw = base58.b58decode_check(text)
        except ValueError:
            raise AddressError("a TRON address is base58check (T…)") from None
        if len(raw) != 21 or raw[0] != 0x41:
            raise AddressError("a TRON address encodes 0x41 and 20 bytes")
        return text
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise AddressError("a Solana address is base58") from None
    if len(raw) != 32 or not Ed25519PublicKey.IsValidBytes(raw):
        raise AddressError("a Solana address is a 32-byte ed25519 public key")
    return text


def random_address(family: ChainFamily) -> str:
    """A well-formed address nobody controls knowingly (test helpers' default sender)."""
    from bip_utils import Ed25519PublicKey

    if family is ChainFamily.EVM:
        return evm_checksum("0x" + secrets.token_hex(20))
    if family is ChainFamily.TRON:
        return str(base58.b58encode_check(b"\x41" + secrets.token_bytes(20)).decode())
    while True:
        raw = secrets.token_bytes(32)
        if Ed25519PublicKey.IsValidBytes(raw):
            return str(base58.b58encode(raw).decode())


def random_tx_hash(family: ChainFamily) -> str:
    if family is ChainFamily.EVM:
        return "0x" + secrets.token_hex(32)
    if family is ChainFamily.TRON:
        return secrets.token_hex(32)
    return str(base58.b58encode(secrets.token_bytes(64)).decode())
