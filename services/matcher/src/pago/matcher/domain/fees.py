"""Processing fee on a settled (``Paid``/``Overpaid``) session, in base units."""

from __future__ import annotations

from pago.common.money import mul_rate_ceil
from pago.matcher.domain.policy import Policy


def fee_for(received: int, policy: Policy) -> int:
    """``min(received, max(fee_floor, ceil(received * fee_rate)))`` base units.

    Rounding up and the floor keep small payments from being processed at a loss; the cap at
    ``received`` keeps ``net_amount = received - fee`` from going negative.
    """
    if received < 0:
        raise ValueError("received must be >= 0 base units")
    return min(received, max(policy.fee_floor, mul_rate_ceil(received, policy.fee_rate)))


def fee_and_net(received: int, policy: Policy) -> tuple[int, int]:
    """``(fee_amount, net_amount)`` for ``received`` base units; ``fee + net == received``."""
    fee = fee_for(received, policy)
    return fee, received - fee
