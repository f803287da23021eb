"""API key format and hashing, and the sub-merchant code format (pure).

A key is ``sk_test_`` or ``sk_live_`` followed by 48 hex characters (24 random bytes). Only
``HMAC-SHA256(pepper, key)`` is stored: a database dump alone cannot be turned back into keys,
and the lookup is one unique-index probe on the digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from pago.common.enums import Mode

_KEY = re.compile(r"sk_(test|live)_[0-9a-f]{48}")

SUB_MERCHANT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a sub-merchant code may look like (``X-Sub-Merchant-Code``; the admin CLI enforces it)."""


def generate_key(mode: Mode) -> str:
    return f"sk_{mode.value}_{secrets.token_bytes(24).hex()}"


def key_mode(key: str) -> Mode | None:
    """The mode a well-formed key names, or None for anything that is not a key."""
    match = _KEY.fullmatch(key)
    return Mode(match[1]) if match else None


def hash_key(pepper: bytes, key: str) -> bytes:
    return hmac.new(pepper, key.encode(), hashlib.sha256).digest()


def key_hint(key: str) -> str:
    """What may be shown and logged: the prefix and the last four characters."""
    return f"{key[:8]}…{key[-4:]}"
