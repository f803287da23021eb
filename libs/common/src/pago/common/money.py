"""Exact token money.

An amount is an ``int`` of base units beside the token's ``decimals`` (USDT on TRON: 6, so
``1_500_000`` is 1.5 USDT). Decimal strings appear only at the edges (API, webhooks) and are
computed in a 78-digit decimal context, wide enough for any uint256. There is no float here.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Self

PRECISION = 78
"""Digits of a uint256, the widest amount any supported chain can carry."""

_DECIMAL_STRING = re.compile(r"(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?")


class MoneyError(ValueError):
    """A decimal string that is not an exact non-negative amount of the token."""


def _context() -> decimal.Context:
    return decimal.Context(
        prec=PRECISION, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Inexact]
    )


def parse_units(text: str, decimals: int) -> int:
    """Parse a plain decimal string (``"10.5"``) into base units; reject more digits than fit.

    Signs, exponents, whitespace, ``NaN`` and thousands separators are refused so that what the
    client wrote is exactly what is charged.
    """
    match = _DECIMAL_STRING.fullmatch(text)
    if match is None:
        raise MoneyError(f"{text!r} is not a plain non-negative decimal number")
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > decimals:
        raise MoneyError(f"{text!r} has more than {decimals} decimal places")
    whole = int(match["int"]) * int(10**decimals)
    return whole + (int(frac.ljust(decimals, "0")) if frac else 0)


def format_units(units: int, decimals: int) -> str:
    """Format base units as a normalized decimal string without trailing zeros (``"10.5"``)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if decimals == 0 or frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"


def decimal_places(text: str) -> int:
    """Significant decimal places of a plain decimal string (``"1.50"`` → 1)."""
    match = _DECIMAL_STRING.fullmatch(text)
    if match is None:
        raise MoneyError(f"{text!r} is not a plain non-negative decimal number")
    return len((match["frac"] or "").rstrip("0"))


def to_decimal(units: int, decimals: int) -> Decimal:
    """The exact ``Decimal`` value of base units."""
    with decimal.localcontext(_context()):
        return Decimal(units).scaleb(-decimals)


def ceil_units(value: Decimal, decimals: int) -> int:
    """Round a non-negative ``Decimal`` token amount up to the next base unit."""
    with decimal.localcontext(_context()) as ctx:
        ctx.traps[decimal.Inexact] = False
        return int(value.scaleb(decimals).to_integral_value(rounding=decimal.ROUND_CEILING))


def mul_rate_ceil(units: int, rate: Decimal) -> int:
    """``ceil(units * rate)`` in base units, exact (used for percentage fees)."""
    with decimal.localcontext(_context()) as ctx:
        ctx.traps[decimal.Inexact] = False
        return int((Decimal(units) * rate).to_integral_value(rounding=decimal.ROUND_CEILING))


@dataclass(frozen=True, slots=True, order=True)
class TokenAmount:
    """An exact amount of one token: base units and the token's decimals."""

    units: int
    decimals: int

    @classmethod
    def parse(cls, text: str, decimals: int) -> Self:
        return cls(parse_units(text, decimals), decimals)

    def __str__(self) -> str:
        return format_units(self.units, self.decimals)

    def _same(self, other: TokenAmount) -> None:
        if other.decimals != self.decimals:
            raise MoneyError("cannot mix amounts of different decimals")

    def __add__(self, other: TokenAmount) -> TokenAmount:
        self._same(other)
        return TokenAmount(self.units + other.units, self.decimals)

    def __sub__(self, other: TokenAmount) -> TokenAmount:
        self._same(other)
        return TokenAmount(self.units - other.units, self.decimals)
