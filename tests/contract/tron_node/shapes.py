"""The shape of a JSON answer: its keys, nesting and value kinds, without the values.

Two answers have the same shape when they have the same keys at every level and each value is
of the same kind: an integer, ``true``/``false``, or a string told apart by its form (hex of a
given length, base58check address, other text). Lists are described by their first element.
"""

from __future__ import annotations

import re
from typing import Any

_HEX = re.compile(r"[0-9a-f]+")
_BASE58_ADDRESS = re.compile(r"T[1-9A-HJ-NP-Za-km-z]{33}")
_NAMED_LENGTHS = {
    4: "2 bytes",
    16: "8 bytes",
    40: "20 bytes",
    42: "41 + 20 bytes",
    64: "32 bytes",
    130: "65 bytes",
}


def kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        if value == "":
            return "empty"
        if _HEX.fullmatch(value):
            return "hex " + _NAMED_LENGTHS.get(len(value), "any length")
        if _BASE58_ADDRESS.fullmatch(value):
            return "base58 address"
        return "text"
    return type(value).__name__


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return kind(value)
