"""From ``pricing_amount`` to the token amount a session expects (pure, exact).

Crypto pricing (``pricing_currency`` is the session's token): the amount is the price, at most
2 decimals, between 1.00 and 10,000,000.00 tokens, and the rate is 1.

Fiat pricing: the rate is *fiat units per 1 token* (EUR per USDT, e.g. ``0.86``), quantized to
8 decimals (the precision stored and shown), and::

    amount_expected = ceil_to_cents(pricing_amount / rate)

rounded *up* to 0.01 token so the merchant never receives less than the price. The price must
be worth at least 1 token before rounding, and the result at most 10,000,000 tokens.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal

from pago.api.errors import InvalidRequest
from pago.common.money import MoneyError, decimal_places, parse_units

MIN_TOKENS = Decimal("1.00")
MAX_TOKENS = Decimal("10000000.00")
RATE_QUANTUM = Decimal("0.00000001")
_CENT = Decimal("0.01")
_PARAM = "pricing_amount"


@dataclass(frozen=True, slots=True)
class Quote:
    units: int
    """``amount_expected`` in base units of the token."""
    rate: Decimal
    """Fiat units per 1 token, 8 decimals (1 for crypto pricing)."""


def _context() -> decimal.Context:
    return decimal.Context(prec=78, rounding=decimal.ROUND_HALF_EVEN)


def quantize_rate(rate: Decimal) -> Decimal:
    with decimal.localcontext(_context()):
        return rate.quantize(RATE_QUANTUM)


def format_rate(rate: Decimal) -> str:
    """Exactly 8 decimals, never an exponent (``"0.86000000"``)."""
    return f"{quantize_rate(rate):f}"


def _checked_places(text: str, max_places: int, what: str) -> None:
    try:
        places = decimal_places(text)
    except MoneyError:
        raise InvalidRequest(
            f'pricing_amount must be a plain decimal string such as "10.50", not {text[:40]!r}.',
            param=_PARAM,
        ) from None
    if places > max_places:
        unit = "no decimal places" if max_places == 0 else f"at most {max_places} decimal places"
        raise InvalidRequest(f"pricing_amount in {what} takes {unit}.", param=_PARAM)


def _bounded(tokens: Decimal, token_symbol: str) -> None:
    if tokens < MIN_TOKENS:
        raise InvalidRequest(
            f"The amount must be at least 1.00 {token_symbol}.",
            param=_PARAM,
            code="amount_too_small",
        )
    if tokens > MAX_TOKENS:
        raise InvalidRequest(
            f"The amount must be at most 10,000,000.00 {token_symbol}.",
            param=_PARAM,
            code="amount_too_large",
        )


def crypto_quote(text: str, token_symbol: str, decimals: int) -> Quote:
    _checked_places(text, 2, token_symbol)
    with decimal.localcontext(_context()):
        tokens = Decimal(text)
        _bounded(tokens, token_symbol)
    return Quote(units=parse_units(text, decimals), rate=Decimal(1))


def fiat_quote(
    text: str, fiat: str, minor_units: int, rate: Decimal, token_symbol: str, decimals: int
) -> Quote:
    _checked_places(text, minor_units, fiat)
    rate = quantize_rate(rate)
    if rate <= 0:
        raise ValueError(f"rate {fiat}/{token_symbol} must be > 0")
    with decimal.localcontext(_context()) as ctx:
        exact = Decimal(text) / rate
        tokens = exact.quantize(_CENT, rounding=decimal.ROUND_CEILING)
        # The minimum applies to what the price is worth, before rounding up to the cent.
        _bounded(min(exact, tokens), token_symbol)
        ctx.rounding = decimal.ROUND_CEILING
        units = int(tokens.scaleb(decimals).to_integral_value())
    return Quote(units=units, rate=rate)
