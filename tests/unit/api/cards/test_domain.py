"""The card session's pure rules: exponents, exact minor units, the sum rule, precedence, the
provider follow-up and the reconciliation's spacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pago.api.cards.domain import (
    STATUS_RANK,
    Amounts,
    OrderInvalid,
    check_amounts,
    exponent_of,
    follow_up_due,
    format_minor,
    minor_amounts,
    next_reconcile,
    next_status,
    to_minor,
)
from pago.common.enums import CardSessionStatus as S


class TestExponent:
    @pytest.mark.parametrize(("code", "exponent"), [("JPY", 0), ("AUD", 2), ("KWD", 3)])
    def test_iso_4217_minor_units(self, code: str, exponent: int) -> None:
        assert exponent_of(code) == exponent

    @pytest.mark.parametrize("code", ["XYZ", "XAU", "aud"])
    def test_unknown_or_unitless_is_none(self, code: str) -> None:
        assert exponent_of(code) is None


class TestToMinor:
    def test_exact(self) -> None:
        assert to_minor(Decimal("140.76"), 2, "amount.total") == 14076
        assert to_minor(Decimal("1.234"), 3, "amount.total") == 1234
        assert to_minor(Decimal("1500"), 0, "amount.total") == 1500

    def test_trailing_zeros_are_fine(self) -> None:
        assert to_minor(Decimal("140.760"), 2, "amount.total") == 14076
        assert to_minor(Decimal("1E+2"), 0, "amount.total") == 100

    @pytest.mark.parametrize(("value", "exponent"), [("140.761", 2), ("1.5", 0), ("0.0001", 3)])
    def test_too_precise_names_the_field(self, value: str, exponent: int) -> None:
        with pytest.raises(OrderInvalid) as caught:
            to_minor(Decimal(value), exponent, "amount.tax")
        assert caught.value.param == "amount.tax"

    def test_format(self) -> None:
        assert format_minor(14076, 2) == "140.76"
        assert format_minor(1500, 0) == "1500"
        assert format_minor(5, 3) == "0.005"


class TestSumRule:
    def test_the_seeds_example(self) -> None:
        amounts = minor_amounts(
            Decimal("140.76"), Decimal("9.95"), Decimal("11.81"), [(Decimal(119), 1)], 2
        )
        check_amounts(amounts, has_items=True)

    def test_point_one_plus_point_two(self) -> None:
        # 0.1 + 0.2 != 0.3 in binary floating point; exactly equal here.
        amounts = minor_amounts(
            Decimal("0.3"), Decimal(0), Decimal(0), [(Decimal("0.1"), 1), (Decimal("0.2"), 1)], 2
        )
        check_amounts(amounts, has_items=True)

    def test_quantity_multiplies(self) -> None:
        check_amounts(Amounts(total=700, shipping=100, tax=0, items=((200, 3),)), has_items=True)

    def test_mismatch_names_total(self) -> None:
        with pytest.raises(OrderInvalid) as caught:
            check_amounts(
                Amounts(total=701, shipping=100, tax=0, items=((200, 3),)), has_items=True
            )
        assert caught.value.param == "amount.total"

    def test_without_items_shipping_and_tax_fit_in_total(self) -> None:
        check_amounts(Amounts(total=100, shipping=60, tax=40, items=()), has_items=False)
        with pytest.raises(OrderInvalid):
            check_amounts(Amounts(total=100, shipping=60, tax=41, items=()), has_items=False)

    def test_zero_total_refused(self) -> None:
        with pytest.raises(OrderInvalid):
            check_amounts(Amounts(total=0, shipping=0, tax=0, items=()), has_items=False)

    def test_item_price_param(self) -> None:
        with pytest.raises(OrderInvalid) as caught:
            minor_amounts(Decimal(1), Decimal(0), Decimal(0), [(Decimal("0.5"), 2)], 0)
        assert caught.value.param == "orderItems.0.unitPrice"


class TestPrecedence:
    def test_ranks_are_a_total_order(self) -> None:
        assert sorted(STATUS_RANK, key=STATUS_RANK.__getitem__) == [
            S.PENDING, S.FAILED, S.CANCELLED, S.EXPIRED, S.COMPLETED
        ]  # fmt: skip

    def test_moves_up(self) -> None:
        assert next_status(S.PENDING, S.COMPLETED) is S.COMPLETED
        assert next_status(S.PENDING, S.FAILED) is S.FAILED
        assert next_status(S.FAILED, S.COMPLETED) is S.COMPLETED

    def test_never_down(self) -> None:
        assert next_status(S.COMPLETED, S.FAILED) is S.COMPLETED
        assert next_status(S.COMPLETED, S.EXPIRED) is S.COMPLETED
        assert next_status(S.EXPIRED, S.FAILED) is S.EXPIRED
        assert next_status(S.FAILED, S.PENDING) is S.FAILED

    def test_informational_moves_nothing(self) -> None:
        assert next_status(S.PENDING, None) is S.PENDING


class TestFollowUpDue:
    def test_the_live_attempt_of_a_pending_session(self) -> None:
        assert follow_up_due(S.PENDING, live_seq=2, attempt_seq=2)

    def test_not_for_a_superseded_attempt(self) -> None:
        assert not follow_up_due(S.PENDING, live_seq=2, attempt_seq=1)
        assert not follow_up_due(S.PENDING, live_seq=None, attempt_seq=1)

    @pytest.mark.parametrize("status", [S.COMPLETED, S.FAILED, S.EXPIRED, S.CANCELLED])
    def test_not_once_the_session_ended(self, status: S) -> None:
        assert not follow_up_due(status, live_seq=1, attempt_seq=1)


class TestNextReconcile:
    created = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)

    def at(self, minutes: float) -> datetime:
        return self.created + timedelta(minutes=minutes)

    def test_the_gap_doubles_with_age(self) -> None:
        assert next_reconcile(self.created, self.at(2)) == self.at(4)
        assert next_reconcile(self.created, self.at(4)) == self.at(8)

    def test_a_young_session_waits_the_first_delay(self) -> None:
        assert next_reconcile(self.created, self.at(0.5)) == self.at(2.5)

    def test_the_gap_is_capped(self) -> None:
        assert next_reconcile(self.created, self.at(40)) == self.at(50)

    def test_an_hour_long_session_is_asked_a_handful_of_times(self) -> None:
        checks, now = 0, self.at(2)
        while now < self.at(60):
            checks += 1
            now = next_reconcile(self.created, now)
        assert checks == 8  # 2, 4, 8, 16, 26, 36, 46, 56 minutes
