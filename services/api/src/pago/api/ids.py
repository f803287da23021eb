"""Public identifiers: a type prefix and 96 random bits in hex (unguessable, URL-safe)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def session_id() -> str:
    return new_id("cs")


def event_id() -> str:
    return new_id("evt")
