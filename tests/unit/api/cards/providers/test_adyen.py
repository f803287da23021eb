"""The Adyen adapter's pure rules: event codes → Pago statuses, Adyen's minor units."""

from __future__ import annotations

import pytest

from pago.api.cards.providers.adyen import (
    adyen_idempotency_key,
    notification_outcome,
    to_adyen_minor,
)
from pago.api.cards.providers.base import ProviderRejected
from pago.common.enums import CardSessionStatus as S


@pytest.mark.parametrize(
    ("event_code", "success", "outcome"),
    [
        ("AUTHORISATION", True, S.COMPLETED),
        ("AUTHORISATION", False, S.FAILED),
        ("CANCELLATION", True, S.CANCELLED),
        ("CANCELLATION", False, None),
        ("OFFER_CLOSED", True, S.EXPIRED),
        ("EXPIRE", True, S.EXPIRED),
        ("EXPIRE", False, None),
        ("CAPTURE", True, None),
        ("REFUND", True, None),
        ("REPORT_AVAILABLE", True, None),
    ],
)
def test_notification_outcome(event_code: str, success: bool, outcome: S | None) -> None:
    assert notification_outcome(event_code, success) is outcome


@pytest.mark.parametrize(
    ("amount", "currency", "exponent", "expected"),
    [
        (14076, "AUD", 2, 14076),
        (1500, "JPY", 0, 1500),
        (1234, "KWD", 3, 1234),
        (1500, "ISK", 0, 150000),
        (990, "CLP", 0, 99000),
        (150000, "IDR", 2, 1500),
        (700, "CVE", 2, 7),
    ],
)
def test_to_adyen_minor(amount: int, currency: str, exponent: int, expected: int) -> None:
    assert to_adyen_minor(amount, currency, exponent) == expected


def test_a_fraction_adyen_cannot_carry_is_rejected() -> None:
    with pytest.raises(ProviderRejected):
        to_adyen_minor(150001, "IDR", 2)


def test_idempotency_key_is_64_deterministic_characters() -> None:
    assert adyen_idempotency_key("a" * 255) == adyen_idempotency_key("a" * 255)
    assert len(adyen_idempotency_key("a" * 255)) == 64
    assert adyen_idempotency_key("a") != adyen_idempotency_key("b")
