"""Address spelling rules per chain family, for comparing a sender with a list entry.

EVM hex is case-insensitive (EIP-55 mixed case is only a checksum), so EVM addresses compare
lower-cased; TRON and Solana addresses are base58, where case is part of the value.
"""

from __future__ import annotations

import hashlib
import re

from pago.common.enums import ChainFamily

_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_TRON_PREFIX = 0x41
_TRON_LENGTH = 25
"""0x41, 20 bytes of account, 4 bytes of checksum."""
_SOLANA_LENGTH = 32
"""An ed25519 public key."""


def normalize(family: ChainFamily, address: str) -> str:
    """The form two spellings of the same address share in ``family``."""
    address = address.strip()
    return address.lower() if family is ChainFamily.EVM else address


def b58decode(text: str) -> bytes | None:
    """Bitcoin-alphabet base58 to bytes, or ``None`` when ``text`` is not base58."""
    value = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            return None
        value = value * 58 + digit
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading_zeros + body


def family_of(address: str) -> ChainFamily | None:
    """Which family ``address`` is spelled for, or ``None`` (e.g. a Bitcoin address).

    OFAC lists addresses per asset, and one asset (USDT) spans chains, so the sanctions loader
    sorts each entry by its shape: EVM hex; TRON base58check with the 0x41 prefix; a base58
    string of exactly 32 bytes for Solana (a Bitcoin base58 address decodes to 25 bytes).
    """
    address = address.strip()
    if _EVM.fullmatch(address):
        return ChainFamily.EVM
    raw = b58decode(address)
    if raw is None:
        return None
    if len(raw) == _TRON_LENGTH and raw[0] == _TRON_PREFIX:
        checksum = hashlib.sha256(hashlib.sha256(raw[:-4]).digest()).digest()[:4]
        return ChainFamily.TRON if checksum == raw[-4:] else None
    if len(raw) == _SOLANA_LENGTH:
        return ChainFamily.SOLANA
    return None
