"""The matcher's pure domain: session state machine, amount matching and fees (no I/O)."""

from pago.matcher.domain.events import (
    DomainEvent,
    PaymentDetected,
    PaymentExceptionRaised,
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
from pago.matcher.domain.policy import Policy
from pago.matcher.domain.state_machine import (
    SETTLED,
    Decision,
    ResolutionError,
    apply_observation,
    expire,
    resolve_exception,
    status_for,
)

__all__ = [
    "SETTLED",
    "AmlOutcome",
    "AmlVerdict",
    "Decision",
    "DomainEvent",
    "Observation",
    "PaymentDetected",
    "PaymentExceptionRaised",
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
    "expire",
    "fee_and_net",
    "fee_for",
    "resolve_exception",
    "status_for",
]
