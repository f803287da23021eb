"""Policy defaults, the fee formula and the amount → status mapping."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pago.common.enums import SessionStatus
from pago.matcher.domain import Policy, fee_and_net, fee_for, status_for

USDT = 10**6
"""One 6-decimal token in base units."""


class TestPolicyDefaults:
    def test_six_decimals(self) -> None:
        policy = Policy.defaults(6)
        assert policy.underpayment_tolerance == 10_000  # 0.01 token
        assert policy.fee_floor == USDT
        assert policy.fee_rate == Decimal("0.005")
        assert policy.underpaid_extension == timedelta(hours=24)

    def test_eighteen_decimals(self) -> None:
        policy = Policy.defaults(18)
        assert policy.underpayment_tolerance == 10**16
        assert policy.fee_floor == 10**18

    def test_fewer_than_two_decimals_match_exactly(self) -> None:
        assert Policy.defaults(0).underpayment_tolerance == 0
        assert Policy.defaults(1).underpayment_tolerance == 0
        assert Policy.defaults(2).underpayment_tolerance == 1

    @pytest.mark.parametrize(
        "overrides",
        [
            {"underpayment_tolerance": -1},
            {"fee_floor": -1},
            {"underpaid_extension": timedelta(seconds=-1)},
            {"fee_rate": Decimal("-0.001")},
            {"fee_rate": Decimal("1.001")},
            {"fee_rate": Decimal("NaN")},
        ],
    )
    def test_rejects_invalid_values(self, overrides: dict[str, object]) -> None:
        base: dict[str, object] = {"underpayment_tolerance": 0, "fee_floor": 0}
        with pytest.raises(ValueError, match="must"):
            Policy(**(base | overrides))  # type: ignore[arg-type]

    def test_rejects_negative_decimals(self) -> None:
        with pytest.raises(ValueError, match="decimals"):
            Policy.defaults(-1)


class TestFeeFor:
    policy = Policy.defaults(6)

    def test_rate_above_floor(self) -> None:
        # 1000 USDT x 0.5 % = 5 USDT, above the 1 USDT floor.
        assert fee_for(1000 * USDT, self.policy) == 5 * USDT

    def test_floor_applies_below_200_tokens(self) -> None:
        # 100 USDT x 0.5 % = 0.5 USDT < floor.
        assert fee_for(100 * USDT, self.policy) == USDT

    def test_floor_and_rate_meet_at_200_tokens(self) -> None:
        assert fee_for(200 * USDT, self.policy) == USDT
        assert fee_for(200 * USDT + 1, self.policy) == USDT + 1  # ceil(1.005)

    def test_rounds_up_to_the_next_base_unit(self) -> None:
        policy = Policy(underpayment_tolerance=0, fee_floor=0, fee_rate=Decimal("0.005"))
        assert fee_for(1, policy) == 1
        assert fee_for(200, policy) == 1
        assert fee_for(201, policy) == 2

    def test_capped_at_received(self) -> None:
        assert fee_for(USDT // 2, self.policy) == USDT // 2
        assert fee_and_net(USDT // 2, self.policy) == (USDT // 2, 0)

    def test_zero_received_is_zero_fee(self) -> None:
        assert fee_for(0, self.policy) == 0

    def test_exact_for_uint256_amounts(self) -> None:
        big = 2**256 - 1
        expected_fee = -(-big * 5 // 1000)  # ceil without Decimal
        assert fee_for(big, Policy.defaults(18)) == expected_fee

    def test_zero_rate_is_floor_only(self) -> None:
        policy = Policy(underpayment_tolerance=0, fee_floor=7, fee_rate=Decimal(0))
        assert fee_for(10**9, policy) == 7

    def test_rejects_negative(self) -> None:
        with pytest.raises(ValueError, match="received"):
            fee_for(-1, self.policy)

    def test_net_is_received_minus_fee(self) -> None:
        assert fee_and_net(1000 * USDT, self.policy) == (5 * USDT, 995 * USDT)

    @given(
        received=st.integers(min_value=0, max_value=10**30),
        floor=st.integers(min_value=0, max_value=10**20),
        rate=st.decimals(min_value=0, max_value=1, places=6),
    )
    def test_fee_bounds(self, received: int, floor: int, rate: Decimal) -> None:
        policy = Policy(underpayment_tolerance=0, fee_floor=floor, fee_rate=rate)
        fee, net = fee_and_net(received, policy)
        assert 0 <= fee <= received
        assert fee >= min(received, floor)
        assert fee + net == received
        # ceil(received x rate) exactly, via integer arithmetic on the rate's digits.
        numerator, denominator = rate.as_integer_ratio()
        assert fee == min(received, max(floor, -(-received * numerator // denominator)))


class TestStatusFor:
    expected = 10 * USDT
    tolerance = 10_000

    @pytest.mark.parametrize(
        ("received", "status"),
        [
            (0, SessionStatus.PENDING),
            (1, SessionStatus.UNDERPAID),
            (10 * USDT - 10_001, SessionStatus.UNDERPAID),
            (10 * USDT - 10_000, SessionStatus.PAID),
            (10 * USDT, SessionStatus.PAID),
            (10 * USDT + 10_000, SessionStatus.PAID),
            (10 * USDT + 10_001, SessionStatus.OVERPAID),
        ],
    )
    def test_tolerance_edges(self, received: int, status: SessionStatus) -> None:
        assert status_for(received, self.expected, self.tolerance) is status

    def test_exact_match_without_tolerance(self) -> None:
        assert status_for(9, 10, 0) is SessionStatus.UNDERPAID
        assert status_for(10, 10, 0) is SessionStatus.PAID
        assert status_for(11, 10, 0) is SessionStatus.OVERPAID

    def test_zero_is_pending_even_within_tolerance(self) -> None:
        assert status_for(0, 5, 10) is SessionStatus.PENDING
        assert status_for(1, 5, 10) is SessionStatus.PAID

    @pytest.mark.parametrize(
        ("received", "expected", "tolerance"), [(-1, 1, 0), (0, 0, 0), (0, 1, -1)]
    )
    def test_rejects_invalid_input(self, received: int, expected: int, tolerance: int) -> None:
        with pytest.raises(ValueError, match="base units"):
            status_for(received, expected, tolerance)

    @given(
        a=st.integers(min_value=0, max_value=10**12),
        b=st.integers(min_value=0, max_value=10**12),
        expected=st.integers(min_value=1, max_value=10**12),
        tolerance=st.integers(min_value=0, max_value=10**10),
    )
    def test_monotonic_in_received(self, a: int, b: int, expected: int, tolerance: int) -> None:
        order = [
            SessionStatus.PENDING,
            SessionStatus.UNDERPAID,
            SessionStatus.PAID,
            SessionStatus.OVERPAID,
        ]
        low, high = sorted((a, b))
        assert order.index(status_for(low, expected, tolerance)) <= order.index(
            status_for(high, expected, tolerance)
        )
