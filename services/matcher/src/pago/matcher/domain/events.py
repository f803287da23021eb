"""What the state machine decided happened, named in the past tense.

The handler persists these with the new state in one database transaction (outbox), so an
event never escapes a change that was rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pago.common.enums import ExceptionKind, SessionStatus, Token
from pago.matcher.domain.model import ResolutionAction, SessionState, TransferKey, TxRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentExceptionRaised:
    """Money that reached the session but needs a human (the Resolution API's queue).

    The adapter keeps one row per ``(session, kind, tx_hash, log_index)`` and upserts: only
    ``aml_unavailable`` can be raised again for the same transfer (each redelivery that could
    not be screened), and that repeat must not open a second case.
    """

    kind: ExceptionKind
    tx_hash: str
    log_index: int
    token: Token
    amount: int
    """Base units of ``token`` (the transfer's token, not necessarily the session's)."""
    detail: str

    @property
    def key(self) -> TransferKey:
        return TransferKey(self.tx_hash, self.log_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdated:
    """The session's status, amounts or transactions changed (``session.updated``)."""

    state: SessionState
    previous_status: SessionStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentDetected:
    """A payment in the session's token was seen near the chain head, not yet credited."""

    session_id: str
    tx: TxRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentReverted:
    """A transfer already credited to the session was reverted by a reorg deeper than the
    confirmation depth; the credit stands and a ``reverted_credit`` exception asks a human."""

    session_id: str
    tx: TxRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionBlocked:
    """The session became ``Blocked`` because ``tx``'s sender failed AML (flags on ``tx``)."""

    session_id: str
    tx: TxRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionExpired:
    session_id: str
    amount_received: int
    """Base units credited before expiry (non-zero when it expired ``Underpaid``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResolved:
    """An operator accepted a payment exception on this session."""

    session_id: str
    kind: ExceptionKind
    tx_hash: str
    log_index: int
    action: ResolutionAction
    resolved_at: datetime


DomainEvent = (
    SessionUpdated
    | PaymentDetected
    | PaymentReverted
    | SessionBlocked
    | SessionExpired
    | SessionResolved
)
