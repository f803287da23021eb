from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pago.common.money import (
    MoneyError,
    TokenAmount,
    ceil_units,
    decimal_places,
    format_units,
    mul_rate_ceil,
    parse_units,
)


class TestParseUnits:
    @pytest.mark.parametrize(
        ("text", "decimals", "units"),
        [
            ("10", 6, 10_000_000),
            ("10.5", 6, 10_500_000),
            ("0.000001", 6, 1),
            ("1.50", 2, 150),
            ("1.000000000000000001", 18, 10**18 + 1),
            (
                "115792089237316195423570985008687907853269984665640564039457.584007913129639935",
                18,
                2**256 - 1,
            ),
        ],
    )
    def test_exact(self, text: str, decimals: int, units: int) -> None:
        assert parse_units(text, decimals) == units

    @pytest.mark.parametrize(
        "text", ["", "-1", "+1", "1e3", "NaN", "1,000", " 1", "1.", ".5", "0x10", "١", "1\n"]
    )
    def test_rejects_what_is_not_a_plain_decimal(self, text: str) -> None:
        with pytest.raises(MoneyError):
            parse_units(text, 6)

    def test_rejects_more_places_than_the_token_has(self) -> None:
        with pytest.raises(MoneyError, match="more than 6 decimal places"):
            parse_units("0.0000001", 6)

    def test_trailing_zeros_beyond_the_token_are_harmless(self) -> None:
        assert parse_units("1.5000000000", 6) == 1_500_000


class TestFormatUnits:
    @pytest.mark.parametrize(
        ("units", "decimals", "text"),
        [
            (0, 6, "0"),
            (10_500_000, 6, "10.5"),
            (1, 6, "0.000001"),
            (10**18, 18, "1"),
            (-1_500_000, 6, "-1.5"),
            (7, 0, "7"),
        ],
    )
    def test_normalized(self, units: int, decimals: int, text: str) -> None:
        assert format_units(units, decimals) == text

    @given(st.integers(min_value=0, max_value=2**256 - 1), st.integers(min_value=0, max_value=24))
    def test_round_trips(self, units: int, decimals: int) -> None:
        assert parse_units(format_units(units, decimals), decimals) == units


class TestArithmetic:
    def test_decimal_places_ignores_trailing_zeros(self) -> None:
        assert decimal_places("1.50") == 1
        assert decimal_places("3") == 0

    def test_ceil_units_rounds_up_to_the_next_base_unit(self) -> None:
        assert ceil_units(Decimal("1.0000001"), 6) == 1_000_001
        assert ceil_units(Decimal("1.000001"), 6) == 1_000_001

    def test_mul_rate_ceil_is_exact_for_large_values(self) -> None:
        assert mul_rate_ceil(10**30 + 1, Decimal("0.005")) == 5 * 10**27 + 1
        assert mul_rate_ceil(200, Decimal("0.005")) == 1

    def test_token_amount_refuses_mixed_decimals(self) -> None:
        assert str(TokenAmount.parse("1.5", 6) + TokenAmount.parse("2", 6)) == "3.5"
        with pytest.raises(MoneyError):
            _ = TokenAmount(1, 6) + TokenAmount(1, 18)
