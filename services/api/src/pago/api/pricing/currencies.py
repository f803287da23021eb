"""Fiat currencies a session may be priced in, with their ISO 4217 minor units."""

from __future__ import annotations

from types import MappingProxyType

FIAT_MINOR_UNITS: MappingProxyType[str, int] = MappingProxyType(
    {
        "USD": 2, "EUR": 2, "GBP": 2, "CNY": 2, "JPY": 0, "KRW": 0, "HKD": 2, "SGD": 2,
        "AUD": 2, "CAD": 2, "CHF": 2, "NZD": 2, "INR": 2, "IDR": 2, "THB": 2, "PHP": 2,
        "MYR": 2, "VND": 0, "TWD": 2, "BRL": 2, "MXN": 2, "AED": 2, "SAR": 2, "TRY": 2,
        "ZAR": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
    }
)  # fmt: skip
"""Decimal places a ``pricing_amount`` may have in each fiat (JPY, KRW and VND have none)."""
