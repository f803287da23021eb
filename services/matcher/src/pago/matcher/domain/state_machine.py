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
from datetime import datetime, timedelta
from enum import StrEnum
from typing import assert_never

from pago.common.enums import ExceptionKind, SessionStatus, TransactionStatus, TransferStage
from pago.common.money import format_units
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
from pago.matcher.domain.policy import DEFAULT_EXPIRY_GRACE, Policy, below_min_credit

SETTLED = frozenset({SessionStatus.PAID, SessionStatus.OVERPAID})
"""Statuses that carry a fee and a net amount."""

_PARKED_AS: dict[SessionStatus, ExceptionKind] = {
    SessionStatus.EXPIRED: ExceptionKind.LATE_PAYMENT,
    SessionStatus.PAID: ExceptionKind.OVERPAYMENT,
    SessionStatus.OVERPAID: ExceptionKind.OVERPAYMENT,
    SessionStatus.BLOCKED: ExceptionKind.BLOCKED_FUNDS,
}
"""The exception a clean, right-token payment to a terminal session raises."""


class IgnoredReason(StrEnum):
    """Why a transfer was recorded for audit only and left the session untouched."""

    BELOW_MIN_CREDIT = "below_min_credit"
    """Dust or a zero-value transfer: below the token's minimum credit (chains registry)."""


class ResolutionError(ValueError):
    """A resolution that does not fit the session: unknown transfer, or nothing to credit."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one input did to a session; the caller persists all of it atomically.

    ``state`` is the whole new state (equal to the input when nothing changed). ``tx`` is the
    transaction row to upsert by ``(tx_hash, log_index)``, ``None`` when no row changed.
    ``exceptions`` are payment exceptions to upsert by ``(kind, tx_hash, log_index)``.
    ``events`` go to the outbox; a :class:`SessionUpdated` is among them exactly when ``state``
    differs from the input, and it comes last. ``ignored`` is set when the transfer was left out
    on purpose (then nothing else is): the caller records it for audit only.
    """

    state: SessionState
    tx: TxRecord | None = None
    exceptions: tuple[PaymentExceptionRaised, ...] = ()
    events: tuple[DomainEvent, ...] = ()
    ignored: IgnoredReason | None = None

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
    *,
    min_credit: int = 1,
) -> Decision:
    """Apply one observed transfer to the session.

    - A transfer below ``min_credit`` base units (the token's minimum credit; always at least
      1, so zero-value transfers included) is ignored at every stage: no status change, no AML
      block, no extension, no event. The decision says so (``ignored``) for the audit record.
      Only a credit made before the minimum existed is still followed (its revert matters).
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
    ``verdict`` is read only for a ``confirmed`` transfer at or above the minimum; the handler
    need screen nothing else. A payment confirmed after ``expires_at`` but before :func:`expire`
    ran still credits: expiry is a compare-and-set that a concurrent payment wins. A payment
    whose block time is before ``expires_at`` credits even on a session the clock has already
    expired (``timed_out``): the customer paid in time (see :func:`expiry_due`).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    existing = state.tx(obs.key)
    if below_min_credit(obs.amount, min_credit) and not (
        existing is not None and existing.credited
    ):
        return Decision(state, ignored=IgnoredReason.BELOW_MIN_CREDIT)
    if obs.block_time is None and existing is not None and existing.block_time is not None:
        # A watcher that lost the block time on a later stage: the first one seen stands.
        obs = dataclasses.replace(obs, block_time=existing.block_time)
    match obs.stage:
        case TransferStage.DETECTED:
            return _on_detected(state, obs, existing)
        case TransferStage.REVERTED:
            return _on_reverted(state, existing)
        case TransferStage.CONFIRMED:
            return _on_confirmed(state, obs, existing, verdict, now, policy)
        case _:
            assert_never(obs.stage)


def in_flight_before_expiry(state: SessionState) -> tuple[TxRecord, ...]:
    """Transfers in the session's token seen on chain before ``expires_at`` and not decided
    yet (only detected, or held for AML): each may still pay the session in time.

    A transfer without a block time (a watcher older than the field) does not count: it keeps
    the old rule, where only the clock decides.
    """
    return tuple(
        tx
        for tx in state.transactions
        if tx.in_flight
        and tx.token is state.token
        and tx.block_time is not None
        and tx.block_time < state.expires_at
    )


def expiry_due(
    state: SessionState,
    now: datetime,
    *,
    chain_time: datetime | None,
    grace: timedelta = DEFAULT_EXPIRY_GRACE,
) -> bool:
    """Whether a ``Pending``/``Underpaid`` session may expire at ``now``.

    ``chain_time`` is how far the chain is proven silent for the session's network × mode: the
    smallest block time of the watcher's progress markers the matcher has consumed, over every
    partition of ``chain.transfers`` (``None`` while some partition has none). Past
    ``expires_at`` the session expires when

    - the chain is proven silent past ``expires_at`` (``chain_time > expires_at``: every
      transfer up to then has been consumed) and no transfer seen before ``expires_at`` is
      still in flight (:func:`in_flight_before_expiry`); or
    - ``now > expires_at + grace`` whatever the chain says (a dead watcher, a stuck transfer).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    if state.status.is_terminal or state.expires_at > now:
        return False
    if now > state.expires_at + grace:
        return True
    if chain_time is None or chain_time <= state.expires_at:
        return False
    return not in_flight_before_expiry(state)


def expire(
    state: SessionState,
    now: datetime,
    *,
    chain_time: datetime | None,
    grace: timedelta = DEFAULT_EXPIRY_GRACE,
) -> Decision | None:
    """Expire a payable session when :func:`expiry_due` says so, else ``None``.

    Credits already received stay in ``amount_received`` (an ``Underpaid`` session expires with
    them); no fee is taken because the session never settled. The session is marked
    ``timed_out``: a payment made on chain before ``expires_at`` that is processed later still
    credits it.
    """
    if not expiry_due(state, now, chain_time=chain_time, grace=grace):
        return None
    after = state.evolve(status=SessionStatus.EXPIRED, timed_out=True)
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
    if obs.token is state.token and _payable(state, obs):
        events = (PaymentDetected(session_id=state.id, tx=record),)
    return _decide(state, after, tx=tx, events=events)


def _on_reverted(state: SessionState, existing: TxRecord | None) -> Decision:
    # An unknown transfer's revert needs no record: a later detection would revive it anyway.
    if existing is None or existing.status is TransactionStatus.REVERTED:
        return Decision(state)
    record = dataclasses.replace(existing, status=TransactionStatus.REVERTED, confirmations=0)
    exceptions: tuple[PaymentExceptionRaised, ...] = ()
    events: tuple[DomainEvent, ...] = ()
    if existing.credited:
        events = (PaymentReverted(session_id=state.id, tx=record),)
        exceptions = (
            _exception(
                ExceptionKind.REVERTED_CREDIT,
                record,
                f"{_amount(state, record)} credited to the session was reverted by a reorg "
                "deeper than the confirmation depth; amount_received still counts it",
            ),
        )
    after, tx = _upsert(state, record)
    return _decide(state, after, tx=tx, exceptions=exceptions, events=events)


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
    if not _payable(state, obs):
        record = TxRecord.from_observation(obs, TransactionStatus.CONFIRMED)
        after, tx = _upsert(state, record)
        kind = _PARKED_AS[state.status]
        detail = f"{_amount(state, record)} arrived after the session was {state.status}"
        return _decide(state, after, tx=tx, exceptions=(_exception(kind, record, detail),))
    return _credit(state, obs, now, policy)


def _payable(state: SessionState, obs: Observation) -> bool:
    """Whether ``obs`` may still credit the session: it is payable, or the clock expired it and
    the transfer's block is older than ``expires_at`` (the customer paid in time; the expiry job
    only could not prove it yet)."""
    if not state.status.is_terminal:
        return True
    return (
        state.status is SessionStatus.EXPIRED
        and state.timed_out
        and obs.block_time is not None
        and obs.block_time < state.expires_at
    )


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
        timed_out=False,
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
