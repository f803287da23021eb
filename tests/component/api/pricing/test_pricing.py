"""Pricing: exact quotes (no float), the rate cache, and the staleness limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from pago.api.errors import ExchangeRateUnavailable, InvalidRequest
from pago.api.pricing.provider import StaticRateProvider
from pago.api.pricing.quote import crypto_quote, fiat_quote, format_rate
from pago.api.pricing.service import PricingService
from pago.common.enums import Token
from pago.common.networks import TokenSpec

USDT6 = TokenSpec(Token.USDT, "T…", 6)
USDT18 = TokenSpec(Token.USDT, "0x…", 18)


class TestQuote:
    def test_crypto_amount_is_exact_base_units(self) -> None:
        assert crypto_quote("10.5", "USDT", 6).units == 10_500_000
        assert crypto_quote("9999999.99", "USDT", 18).units == 999_999_999 * 10**16
        assert crypto_quote("1", "USDC", 6).rate == Decimal(1)

    @pytest.mark.parametrize(
        ("amount", "rate", "units"),
        [
            ("10", "3", 3_340_000),  # 3.333… → 3.34
            ("10", "2.5", 4_000_000),  # exact: no rounding up
            ("7", "7", 1_000_000),  # exactly the minimum
        ],
    )
    def test_fiat_rounds_up_to_the_cent(self, amount: str, rate: str, units: int) -> None:
        assert fiat_quote(amount, "EUR", 2, Decimal(rate), "USDT", 6).units == units

    def test_the_minimum_applies_before_rounding_up(self) -> None:
        # 7 / 7.00000001 = 0.99999999…: it would round up to 1.00, but is worth less.
        with pytest.raises(InvalidRequest) as refused:
            fiat_quote("7", "EUR", 2, Decimal("7.00000001"), "USDT", 6)
        assert refused.value.code == "amount_too_small"

    def test_rate_is_quantized_to_8_places_before_use(self) -> None:
        quote = fiat_quote("1000", "JPY", 0, Decimal("155.123456789"), "USDT", 6)
        assert quote.rate == Decimal("155.12345679")
        assert format_rate(quote.rate) == "155.12345679"
        assert format_rate(Decimal(1)) == "1.00000000"
        assert format_rate(Decimal("1E+3")) == "1000.00000000"

    def test_large_amounts_stay_exact(self) -> None:
        # 9,999,999.99 / 1.00000001 = 9,999,999.8900000…, up to the cent
        quote = fiat_quote("9999999.99", "USD", 2, Decimal("1.00000001"), "USDT", 18)
        assert quote.units == 999_999_990 * 10**16
        with pytest.raises(InvalidRequest) as refused:
            fiat_quote("9999999.99", "USD", 2, Decimal("0.99999999"), "USDT", 18)
        assert refused.value.code == "amount_too_large"


class TestPricingService:
    async def test_a_stale_rate_is_refused(self, redis: Redis) -> None:
        old = datetime.now(UTC) - timedelta(hours=2)
        provider = StaticRateProvider({"EUR": {Token.USDT: Decimal("0.9")}}, clock=lambda: old)
        service = PricingService(provider, redis, cache_seconds=60, max_age_seconds=3600)
        with pytest.raises(ExchangeRateUnavailable):
            await service.quote("EUR", "10", USDT6)

    async def test_a_rate_inside_the_limit_is_used(self, redis: Redis) -> None:
        recent = datetime.now(UTC) - timedelta(minutes=59)
        provider = StaticRateProvider({"EUR": {Token.USDT: Decimal("0.9")}}, clock=lambda: recent)
        service = PricingService(provider, redis, cache_seconds=60, max_age_seconds=3600)
        quote = await service.quote("EUR", "9", USDT18)
        assert (quote.units, quote.rate) == (10 * 10**18, Decimal("0.90000000"))

    async def test_crypto_pricing_must_match_the_currency(self, redis: Redis) -> None:
        service = PricingService(
            StaticRateProvider({}), redis, cache_seconds=60, max_age_seconds=60
        )
        with pytest.raises(InvalidRequest) as refused:
            await service.quote("USDC", "10", USDT6)
        assert refused.value.param == "pricing_currency"
