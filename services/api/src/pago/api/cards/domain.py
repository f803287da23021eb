"""The card session's pure rules: money in minor units, the order's consistency, and the status
precedence that resolves out-of-order provider events. No I/O; unit-tested in microseconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

from iso4217 import Currency

from pago.common.enums import CardSessionStatus


class OrderInvalid(ValueError):
    """An order rule failed; ``param`` is the camelCase path of the field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def exponent_of(code: str) -> int | None:
    """ISO 4217 minor-unit exponent (JPY 0, AUD 2, KWD 3); ``None`` for a code ISO 4217 does not
    list or one without minor units (gold ``XAU``, ``XXX``): such a currency cannot be charged."""
    try:
        currency = Currency(code)
    except ValueError:
        return None
    exponent: int | None = currency.exponent
    return exponent


def to_minor(value: Decimal, exponent: int, param: str) -> int:
    """``value`` (major units) as an exact count of minor units, or :class:`OrderInvalid` when it
    has more precision than the currency (``140.761`` AUD); trailing zeros are fine."""
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise OrderInvalid(
            f"{param} has more decimal places than the currency allows ({exponent}).", param
        )
    return int(scaled)


def format_minor(units: int, exponent: int) -> str:
    """``14076``, 2 → ``"140.76"``; JPY ``1500``, 0 → ``"1500"``."""
    return str(Decimal(units).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


@dataclass(frozen=True, slots=True)
class Amounts:
    total: int
    shipping: int
    tax: int
    items: tuple[tuple[int, int], ...]
    """(unit price in minor units, quantity) per order item."""


def check_amounts(amounts: Amounts, *, has_items: bool) -> None:
    """The consistency rule: with items, Σ unit price × quantity + shipping + tax == total;
    without, shipping + tax ≤ total. A total of zero is refused (nothing to charge)."""
    if amounts.total <= 0:
        raise OrderInvalid("amount.total must be greater than zero.", "amount.total")
    if has_items:
        expected = sum(price * qty for price, qty in amounts.items) + amounts.shipping + amounts.tax
        if expected != amounts.total:
            raise OrderInvalid(
                "amount.total must equal the sum of orderItems (unitPrice × quantity) plus "
                "amount.shipping and amount.tax.",
                "amount.total",
            )
    elif amounts.shipping + amounts.tax > amounts.total:
        raise OrderInvalid(
            "amount.shipping plus amount.tax must not exceed amount.total.", "amount.total"
        )


def minor_amounts(
    total: Decimal,
    shipping: Decimal,
    tax: Decimal,
    items: Sequence[tuple[Decimal, int]],
    exponent: int,
) -> Amounts:
    return Amounts(
        total=to_minor(total, exponent, "amount.total"),
        shipping=to_minor(shipping, exponent, "amount.shipping"),
        tax=to_minor(tax, exponent, "amount.tax"),
        items=tuple(
            (to_minor(price, exponent, f"orderItems.{i}.unitPrice"), qty)
            for i, (price, qty) in enumerate(items)
        ),
    )


# --- status precedence ----------------------------------------------------------------------

STATUS_RANK: MappingProxyType[CardSessionStatus, int] = MappingProxyType(
    {
        CardSessionStatus.PENDING: 0,
        CardSessionStatus.FAILED: 1,
        CardSessionStatus.CANCELLED: 2,
        CardSessionStatus.EXPIRED: 3,
        CardSessionStatus.COMPLETED: 4,
    }
)
"""Out-of-order provider events resolve by rank: a session moves only to a higher rank.

COMPLETED is highest because money moved: a late "expired" or "failed" for a checkout that was
paid must never hide the payment. A decline (FAILED) followed by a successful retry on the same
hosted page (COMPLETED) ends COMPLETED; an EXPIRED after a FAILED records that the page lapsed.
A terminal status never goes back to PENDING."""


def next_status(current: CardSessionStatus, outcome: CardSessionStatus | None) -> CardSessionStatus:
    """The session's status after an event implying ``outcome`` (``None``: informational)."""
    if outcome is None or STATUS_RANK[outcome] <= STATUS_RANK[current]:
        return current
    return outcome


def follow_up_due(status: CardSessionStatus, live_seq: int | None, attempt_seq: int) -> bool:
    """Is the provider's follow-up (PayPal's capture of an approved order) owed for a
    notification of attempt ``attempt_seq``? Only for the session's live attempt, and only while
    the session is PENDING — a redelivery included: the follow-up may have failed last time."""
    return status is CardSessionStatus.PENDING and live_seq == attempt_seq


# --- reconciliation -------------------------------------------------------------------------

RECONCILE_FIRST = timedelta(minutes=2)
"""A session younger than this is left to its webhooks (a payer paying, a capture on its way)."""
RECONCILE_MAX_GAP = timedelta(minutes=10)
"""The longest wait between two reconciliation checks of one PENDING session."""


def next_reconcile(
    created_at: datetime,
    now: datetime,
    first: timedelta = RECONCILE_FIRST,
    max_gap: timedelta = RECONCILE_MAX_GAP,
) -> datetime:
    """When the reconciliation pass asks the provider again about a session it asks about now:
    the gap doubles with the session's age (checks at about 2, 4, 8, 16 minutes), capped at
    ``max_gap`` (then every 10 minutes until it expires) — an abandoned session costs a handful
    of provider reads, a lost webhook is healed within minutes."""
    gap = min(max(now - created_at, first), max_gap)
    return now + gap
