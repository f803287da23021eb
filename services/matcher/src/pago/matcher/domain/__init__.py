"""The matcher's pure domain: session state machine, amount matching and fees (no I/O)."""

from pago.matcher.domain.events import (
    DomainEvent,
    PaymentDetected,
    PaymentExceptionRaised,
    PaymentReverted,
    SessionBlocked,
    SessionExpired,
    SessionResolved,
    SessionUpdated,
)
from pago.matcher.domain.fees import fee_and_net, fee_for
from pago.matcher.domain.model import (
    AmlOutcome,
    AmlVerdict,
    Observation,
    ResolutionAction,
    SessionState,
    TransferKey,
    TxRecord,
)
from pago.matcher.domain.policy import DEFAULT_EXPIRY_GRACE, Policy, below_min_credit
from pago.matcher.domain.progress import PartitionProgress, chain_time
from pago.matcher.domain.state_machine import (
    SETTLED,
    Decision,
    IgnoredReason,
    ResolutionError,
    apply_observation,
    expire,
    expiry_due,
    in_flight_before_expiry,
    resolve_exception,
    status_for,
)

__all__ = [
    "DEFAULT_EXPIRY_GRACE",
    "SETTLED",
    "AmlOutcome",
    "AmlVerdict",
    "Decision",
    "DomainEvent",
    "IgnoredReason",
    "Observation",
    "PartitionProgress",
    "PaymentDetected",
    "PaymentExceptionRaised",
    "PaymentReverted",
    "Policy",
    "ResolutionAction",
    "ResolutionError",
    "SessionBlocked",
    "SessionExpired",
    "SessionResolved",
    "SessionState",
    "SessionUpdated",
    "TransferKey",
    "TxRecord",
    "apply_observation",
    "below_min_credit",
    "chain_time",
    "expire",
    "expiry_due",
    "fee_and_net",
    "fee_for",
    "in_flight_before_expiry",
    "resolve_exception",
    "status_for",
]
