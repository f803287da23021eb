"""The session state machine: an observed transfer, a clock tick or a resolution in, a Decision out.

Pure: ``now`` is an argument and nothing here does I/O. The handler loads the session with its
transactions (row lock), calls one function, and persists the returned :class:`Decision` — the
state, the one transaction row, the exceptions and the outbox events — in one database
transaction. Every function is idempotent: applying the same input to the state it produced
returns a decision with nothing to write (``Decision.changed`` is false), which is what makes
at-least-once delivery of ``chain.transfers`` safe.

Statuses: ``Pending``/``Underpaid`` take credits; ``Paid``, ``Overpaid``, ``Expired`` and
``Blocked`` are terminal and park further money as payment exceptions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from pago.common.enums import ExceptionKind, SessionStatus, TransactionStatus, TransferStage
from pago.common.money import format_units
from pago.matcher.domain.events import (
    DomainEvent,
    PaymentDetected,
    PaymentExceptionRaised,
    SessionBlocked,
    SessionExpired,
    SessionResolved,
    SessionUpdated,
)
from pago.matcher.domain.fees import fee_and_net
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

SETTLED = frozenset({SessionStatus.PAID, SessionStatus.OVERPAID})
"""Statuses that carry a fee and a net amount."""

_PARKED_AS: dict[SessionStatus, ExceptionKind] = {
    SessionStatus.EXPIRED: ExceptionKind.LATE_PAYMENT,
    SessionStatus.PAID: ExceptionKind.OVERPAYMENT,
    SessionStatus.OVERPAID: ExceptionKind.OVERPAYMENT,
    SessionStatus.BLOCKED: ExceptionKind.BLOCKED_FUNDS,
}
"""The exception a clean, right-token payment to a terminal session raises."""


class ResolutionError(ValueError):
    """A resolution that does not fit the session: unknown transfer, or nothing to credit."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one input did to a session; the caller persists all of it atomically.

    ``state`` is the whole new state (equal to the input when nothing changed). ``tx`` is the
    transaction row to upsert by ``(tx_hash, log_index)``, ``None`` when no row changed.
    ``exceptions`` are payment exceptions to upsert by ``(kind, tx_hash, log_index)``.
    ``events`` go to the outbox; a :class:`SessionUpdated` is among them exactly when ``state``
    differs from the input, and it comes last.
    """

    state: SessionState
    tx: TxRecord | None = None
    exceptions: tuple[PaymentExceptionRaised, ...] = ()
    events: tuple[DomainEvent, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether there is anything to write (false for a duplicate delivery)."""
        return self.tx is not None or bool(self.exceptions) or bool(self.events)


def status_for(received: int, expected: int, tolerance: int) -> SessionStatus:
    """The status ``received`` base units earn against ``expected``, ``tolerance`` either side.

    ``0`` → Pending; ``(0, expected - tolerance)`` → Underpaid; ``[expected - tolerance,
    expected + tolerance]`` → Paid; above → Overpaid. Zero wins over the tolerance, so a session
    whose expected amount is within tolerance of zero still waits for a first payment.
    """
    if received < 0 or expected <= 0 or tolerance < 0:
        raise ValueError("received and tolerance must be >= 0 and expected > 0 base units")
    if received == 0:
        return SessionStatus.PENDING
    if received < expected - tolerance:
        return SessionStatus.UNDERPAID
    if received <= expected + tolerance:
        return SessionStatus.PAID
    return SessionStatus.OVERPAID


def apply_observation(
    state: SessionState,
    obs: Observation,
    verdict: AmlVerdict,
    now: datetime,
    policy: Policy,
) -> Decision:
    """Apply one observed transfer to the session.

    - ``detected`` records the transfer as ``Confirming``, uncredited (hosted page only).
    - ``confirmed`` decides it, in this order: AML (a hit blocks, an unavailable screening holds
      it as ``Confirming``), then the token (wrong token → exception), then the session (a
      terminal session parks it as an exception), else it is credited.
    - ``reverted`` marks it ``Reverted``; a credit already made stands and raises
      ``reverted_credit`` for a human. An uncredited reverted transfer comes back to life on a
      later ``detected``/``confirmed`` (re-mined after a reorg); a credited one re-confirmed
      goes back to ``Confirmed`` without a second credit.

    A transfer confirmed and decided without a credit (parked, wrong token, blocked) is final:
    its redeliveries are no-ops. Only an AML-held one is decided again on each redelivery.
    ``verdict`` is read only for ``confirmed``; the handler need screen nothing else. A payment
    confirmed after ``expires_at`` but before :func:`expire` ran still credits: expiry is a
    compare-and-set that a concurrent payment wins.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    existing = state.tx(obs.key)
    match obs.stage:
        case TransferStage.DETECTED:
            return _on_detected(state, obs, existing)
        case TransferStage.REVERTED:
            return _on_reverted(state, existing)
        case TransferStage.CONFIRMED:
            return _on_confirmed(state, obs, existing, verdict, now, policy)
        case _:
            assert_never(obs.stage)


def expire(state: SessionState, now: datetime) -> Decision | None:
    """Expire a ``Pending``/``Underpaid`` session whose ``expires_at`` has passed, else ``None``.

    Credits already received stay in ``amount_received`` (an ``Underpaid`` session expires with
    them); no fee is taken because the session never settled.
    """
    if state.status.is_terminal or state.expires_at > now:
        return None
    after = state.evolve(status=SessionStatus.EXPIRED)
    expired = SessionExpired(session_id=state.id, amount_received=state.amount_received)
    return _decide(state, after, events=(expired,))


def resolve_exception(
    state: SessionState,
    kind: ExceptionKind,
    key: TransferKey,
    action: ResolutionAction,
    now: datetime,
    policy: Policy,
) -> Decision:
    """Apply an operator's decision on the payment exception ``kind`` raised for transfer ``key``.

    ``kind`` is the stored exception's kind (the caller loads the exception row; this module
    keeps no exception state). Only one combination moves money into the session:

    - **accept a late_payment**: the transfer is credited. When the new ``amount_received`` is
      within tolerance of (or above) ``amount_expected`` the session settles as ``Paid`` or
      ``Overpaid`` with its fee; otherwise it stays ``Expired`` with the larger amount, and no
      fee (fees are taken only on a settled session). Accepting it again is a no-op.
    - **accept anything else** (overpayment, blocked_funds, wrong_token, aml_unavailable,
      reverted_credit): the merchant keeps or releases the money outside the session; its
      amounts and status do not move, so what earlier webhooks said stays true.
      ``SessionResolved`` is emitted.
    - **refund_requested / dismiss**: the exception row changes (see
      ``ResolutionAction.exception_status``) but the session does not, and no event is emitted:
      only an acceptance is news to the merchant's integration.

    Raises :class:`ResolutionError` for an unknown transfer or a late payment that cannot be
    credited (reverted, wrong token, session not expired or settled).
    """
    record = state.tx(key)
    if record is None:
        raise ResolutionError(f"session {state.id} has no transfer {key.tx_hash}:{key.log_index}")
    if action is not ResolutionAction.ACCEPT:
        return Decision(state)
    resolved = SessionResolved(
        session_id=state.id,
        kind=kind,
        tx_hash=key.tx_hash,
        log_index=key.log_index,
        action=action,
        resolved_at=now,
    )
    if kind is not ExceptionKind.LATE_PAYMENT:
        return Decision(state, events=(resolved,))
    if record.credited:
        # A late payment is credited only by an acceptance, so this one was accepted already.
        return Decision(state)
    if record.status is not TransactionStatus.CONFIRMED:
        raise ResolutionError(f"transfer is {record.status}; only a confirmed one can be credited")
    if record.token is not state.token:
        raise ResolutionError(f"a {record.token} transfer cannot pay a {state.token} session")
    # Expired, or settled by an earlier accepted late payment; never Blocked or still payable.
    if state.status not in (SessionStatus.EXPIRED, *SETTLED):
        raise ResolutionError(f"a late payment cannot be accepted on a {state.status} session")

    credited = dataclasses.replace(record, credited=True)
    received = state.amount_received + record.amount
    status = status_for(received, state.amount_expected, policy.underpayment_tolerance)
    after = state.with_tx(credited)
    if status in SETTLED:
        fee, net = fee_and_net(received, policy)
        after = after.evolve(
            status=status, amount_received=received, fee_amount=fee, net_amount=net
        )
    else:
        after = after.evolve(amount_received=received)
    return _decide(state, after, tx=credited, events=(resolved,))


def _on_detected(state: SessionState, obs: Observation, existing: TxRecord | None) -> Decision:
    if existing is not None and (
        existing.credited or existing.status is not TransactionStatus.REVERTED
    ):
        # A duplicate, or a stale detection after the confirmation: what we have is newer.
        return Decision(state)
    record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMING)
    after, tx = _upsert(state, record)
    events: tuple[DomainEvent, ...] = ()
    # Tell the payer's page only about money this session can still take.
    if obs.token is state.token and not state.status.is_terminal:
        events = (PaymentDetected(session_id=state.id, tx=record),)
    return _decide(state, after, tx=tx, events=events)


def _on_reverted(state: SessionState, existing: TxRecord | None) -> Decision:
    # An unknown transfer's revert needs no record: a later detection would revive it anyway.
    if existing is None or existing.status is TransactionStatus.REVERTED:
        return Decision(state)
    record = dataclasses.replace(existing, status=TransactionStatus.REVERTED, confirmations=0)
    exceptions: tuple[PaymentExceptionRaised, ...] = ()
    if existing.credited:
        exceptions = (
            _exception(
                ExceptionKind.REVERTED_CREDIT,
                record,
                f"{_amount(state, record)} credited to the session was reverted by a reorg "
                "deeper than the confirmation depth; amount_received still counts it",
            ),
        )
    after, tx = _upsert(state, record)
    return _decide(state, after, tx=tx, exceptions=exceptions)


def _on_confirmed(
    state: SessionState,
    obs: Observation,
    existing: TxRecord | None,
    verdict: AmlVerdict,
    now: datetime,
    policy: Policy,
) -> Decision:
    if existing is not None:
        if existing.credited:
            if existing.status is TransactionStatus.REVERTED:
                # Re-mined after the reorg: the credit that stood is backed by a block again.
                record = dataclasses.replace(
                    existing, status=TransactionStatus.CONFIRMED, confirmations=obs.confirmations
                )
                after, tx = _upsert(state, record)
                return _decide(state, after, tx=tx)
            return Decision(state)
        if existing.status in (TransactionStatus.CONFIRMED, TransactionStatus.BLOCKED):
            # Already decided without a credit (parked, wrong token or blocked) and its
            # exception raised; a redelivery must not raise it again.
            return Decision(state)
    # New, only detected, held for AML, or revived after a revert: decide it now.
    match verdict.outcome:
        case AmlOutcome.HIT:
            return _block(state, obs, verdict)
        case AmlOutcome.UNAVAILABLE:
            return _hold(state, obs)
        case AmlOutcome.CLEAR:
            pass
        case _:
            assert_never(verdict.outcome)
    if obs.token is not state.token:
        record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMED)
        after, tx = _upsert(state, record)
        # Base units, not a decimal string: the other token's decimals are not the session's.
        detail = f"{obs.amount} base units of {obs.token} sent to a {state.token} session"
        return _decide(
            state, after, tx=tx, exceptions=(_exception(ExceptionKind.WRONG_TOKEN, record, detail),)
        )
    if state.status.is_terminal:
        record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMED)
        after, tx = _upsert(state, record)
        kind = _PARKED_AS[state.status]
        detail = f"{_amount(state, record)} arrived after the session was {state.status}"
        return _decide(state, after, tx=tx, exceptions=(_exception(kind, record, detail),))
    return _credit(state, obs, now, policy)


def _block(state: SessionState, obs: Observation, verdict: AmlVerdict) -> Decision:
    """The sender failed AML: hold the funds uncredited; block the session if still payable."""
    record = TxRecord.from_observation(obs, TransactionStatus.BLOCKED, aml_flags=verdict.flags)
    after, tx = _upsert(state, record)
    reasons = ", ".join(verdict.flags) or "no reason given"
    detail = f"sender {obs.from_address} failed AML screening ({reasons})"
    events: tuple[DomainEvent, ...] = ()
    if not state.status.is_terminal:
        after = after.evolve(status=SessionStatus.BLOCKED)
        events = (SessionBlocked(session_id=state.id, tx=record),)
    return _decide(
        state,
        after,
        tx=tx,
        exceptions=(_exception(ExceptionKind.BLOCKED_FUNDS, record, detail),),
        events=events,
    )


def _hold(state: SessionState, obs: Observation) -> Decision:
    """No screening answer: keep the transfer ``Confirming`` and uncredited until a redelivery
    with a verdict decides it (the consumer re-screens on redelivery)."""
    record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMING)
    after, tx = _upsert(state, record)
    detail = "AML screening unavailable; the transfer is held uncredited until it is screened"
    return _decide(
        state,
        after,
        tx=tx,
        exceptions=(_exception(ExceptionKind.AML_UNAVAILABLE, record, detail),),
    )


def _credit(state: SessionState, obs: Observation, now: datetime, policy: Policy) -> Decision:
    record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMED, credited=True)
    received = state.amount_received + obs.amount
    status = status_for(received, state.amount_expected, policy.underpayment_tolerance)
    expires_at = state.expires_at
    if status is SessionStatus.UNDERPAID:
        # The payer needs time to top up; never shorten a window the merchant set longer.
        expires_at = max(expires_at, now + policy.underpaid_extension)
    fee, net = fee_and_net(received, policy) if status in SETTLED else (0, 0)
    after = state.with_tx(record).evolve(
        status=status,
        expires_at=expires_at,
        amount_received=received,
        fee_amount=fee,
        net_amount=net,
    )
    return _decide(state, after, tx=record)


def _upsert(state: SessionState, record: TxRecord) -> tuple[SessionState, TxRecord | None]:
    """The state with ``record`` in it, and ``record`` only if the row actually changed."""
    if state.tx(record.key) == record:
        return state, None
    return state.with_tx(record), record


def _decide(
    before: SessionState,
    after: SessionState,
    *,
    tx: TxRecord | None = None,
    exceptions: tuple[PaymentExceptionRaised, ...] = (),
    events: tuple[DomainEvent, ...] = (),
) -> Decision:
    if after != before:
        events = (*events, SessionUpdated(state=after, previous_status=before.status))
    return Decision(after, tx, exceptions, events)


def _exception(kind: ExceptionKind, record: TxRecord, detail: str) -> PaymentExceptionRaised:
    return PaymentExceptionRaised(
        kind=kind,
        tx_hash=record.tx_hash,
        log_index=record.log_index,
        token=record.token,
        amount=record.amount,
        detail=detail,
    )


def _amount(state: SessionState, record: TxRecord) -> str:
    """``record``'s amount as a decimal string in the session's token (for details only)."""
    return f"{format_units(record.amount, state.decimals)} {record.token}"
