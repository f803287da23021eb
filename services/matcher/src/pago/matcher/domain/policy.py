"""How a session treats amounts: tolerance, underpayment grace and fees (per merchant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Self

DEFAULT_UNDERPAID_EXTENSION = timedelta(hours=24)
DEFAULT_EXPIRY_GRACE = timedelta(hours=1)
"""How long past ``expires_at`` a session waits for proof that the chain is silent (or for a
payment in flight to confirm) before it expires anyway: bounds a dead watcher or a stuck
transfer."""
DEFAULT_FEE_RATE = Decimal("0.005")
"""0.5 % of the amount received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Matching and fee parameters, all amounts in base units of the session's token.

    A policy belongs to one token's ``decimals``: build it with :meth:`defaults` (or from the
    merchant's overrides) for the session at hand, never share one across decimals.
    """

    underpayment_tolerance: int
    """Base units by which ``amount_received`` may miss ``amount_expected`` (either side) and
    still be ``Paid``; default 0.01 token, so wallets that round a fee off do not strand a payer."""
    fee_floor: int
    """Smallest fee in base units; default 1 token."""
    underpaid_extension: timedelta = DEFAULT_UNDERPAID_EXTENSION
    """An ``Underpaid`` session stays payable at least this long after its latest credit."""
    fee_rate: Decimal = DEFAULT_FEE_RATE
    """Fraction of ``amount_received`` (``Decimal("0.005")`` is 0.5 %)."""

    def __post_init__(self) -> None:
        if self.underpayment_tolerance < 0:
            raise ValueError("underpayment_tolerance must be >= 0 base units")
        if self.fee_floor < 0:
            raise ValueError("fee_floor must be >= 0 base units")
        if self.underpaid_extension < timedelta(0):
            raise ValueError("underpaid_extension must not be negative")
        if not self.fee_rate.is_finite():
            raise ValueError("fee_rate must be a finite Decimal")
        if not Decimal(0) <= self.fee_rate <= Decimal(1):
            raise ValueError("fee_rate must be within [0, 1]")

    @classmethod
    def defaults(cls, decimals: int) -> Self:
        """The house defaults for a token of ``decimals``: tolerance 0.01, floor 1, 0.5 %, +24 h.

        With fewer than 2 decimals 0.01 token is not representable, so the tolerance rounds
        down to 0 (exact matching) rather than up to a whole unit.
        """
        if decimals < 0:
            raise ValueError("decimals must be >= 0")
        tolerance = 10 ** (decimals - 2) if decimals >= 2 else 0
        return cls(underpayment_tolerance=tolerance, fee_floor=10**decimals)


def below_min_credit(amount: int, min_credit: int) -> bool:
    """Whether a transfer of ``amount`` base units is dust for a token whose minimum credit is
    ``min_credit`` base units: it must not move, block or extend a session, nor be screened.

    The minimum is at least 1 base unit whatever the caller passes, so a zero-value transfer
    (``transferFrom(anyone, to, 0)`` succeeds without allowance on ERC-20 and TRC-20, naming any
    address as sender) is always dust.
    """
    if amount < 0:
        raise ValueError("amount must be >= 0 base units")
    return amount < max(1, min_credit)
