"""The session state machine, rule by rule: one class per operation or concern."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pago.common.enums import (
    ExceptionKind,
    ExceptionStatus,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)
from pago.matcher.domain import (
    AmlVerdict,
    Decision,
    DomainEvent,
    IgnoredReason,
    Observation,
    PaymentDetected,
    PaymentReverted,
    Policy,
    ResolutionAction,
    ResolutionError,
    SessionBlocked,
    SessionExpired,
    SessionResolved,
    SessionState,
    SessionUpdated,
    TransferKey,
    TxRecord,
    apply_observation,
    expire,
    fee_for,
    resolve_exception,
)

USDT = 10**6
"""One 6-decimal token in base units."""
POLICY = Policy.defaults(6)
TOLERANCE = POLICY.underpayment_tolerance
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
CLEAR = AmlVerdict.clear()
KEY = TransferKey("0xaa", 0)
SILENT = EXPIRES + timedelta(days=2)
"""A chain time past every window of these tests: the chain is proven silent."""


def session(
    status: SessionStatus = SessionStatus.PENDING,
    *,
    expected: int = 10 * USDT,
    expires_at: datetime = EXPIRES,
) -> SessionState:
    return SessionState(
        id="cs_test",
        status=status,
        token=Token.USDT,
        decimals=6,
        amount_expected=expected,
        expires_at=expires_at,
    )


def obs(
    stage: TransferStage = TransferStage.CONFIRMED,
    amount: int = 10 * USDT,
    *,
    tx_hash: str = KEY.tx_hash,
    log_index: int = KEY.log_index,
    token: Token = Token.USDT,
    confirmations: int = 19,
) -> Observation:
    return Observation(
        tx_hash=tx_hash,
        log_index=log_index,
        token=token,
        amount=amount,
        from_address="TPayer",
        stage=stage,
        confirmations=confirmations,
    )


def apply(
    state: SessionState,
    observation: Observation,
    verdict: AmlVerdict = CLEAR,
    now: datetime = T0,
    *,
    min_credit: int = 1,
) -> Decision:
    return apply_observation(state, observation, verdict, now, POLICY, min_credit=min_credit)


def pay(state: SessionState, amount: int, tx_hash: str, now: datetime = T0) -> SessionState:
    return apply(state, obs(amount=amount, tx_hash=tx_hash), now=now).state


def kinds(decision: Decision) -> list[ExceptionKind]:
    return [e.kind for e in decision.exceptions]


def event_types(decision: Decision) -> list[type[DomainEvent]]:
    return [type(e) for e in decision.events]


def assert_noop(decision: Decision, state: SessionState) -> None:
    assert decision.state == state
    assert not decision.changed


class TestDetected:
    def test_records_confirming_uncredited_and_announces(self) -> None:
        state = session()
        decision = apply(state, obs(TransferStage.DETECTED, confirmations=1))
        tx = decision.state.tx(KEY)
        assert tx is not None
        assert tx.status is TransactionStatus.CONFIRMING
        assert not tx.credited
        assert tx.confirmations == 1
        assert decision.tx == tx
        assert decision.state.amount_received == 0
        assert decision.state.status is SessionStatus.PENDING
        assert event_types(decision) == [PaymentDetected, SessionUpdated]
        assert decision.exceptions == ()

    def test_duplicate_changes_nothing(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        assert_noop(apply(state, obs(TransferStage.DETECTED, confirmations=5)), state)

    def test_after_confirmation_is_stale(self) -> None:
        state = apply(session(), obs()).state
        assert_noop(apply(state, obs(TransferStage.DETECTED)), state)

    def test_ignores_the_aml_verdict(self) -> None:
        decision = apply(session(), obs(TransferStage.DETECTED), AmlVerdict.hit("ofac"))
        assert decision.state.status is SessionStatus.PENDING
        assert decision.exceptions == ()

    @pytest.mark.parametrize("status", [SessionStatus.EXPIRED, SessionStatus.PAID])
    def test_on_terminal_session_records_without_announcing(self, status: SessionStatus) -> None:
        decision = apply(session(status), obs(TransferStage.DETECTED))
        assert decision.tx is not None
        assert event_types(decision) == [SessionUpdated]

    def test_wrong_token_records_without_announcing(self) -> None:
        decision = apply(session(), obs(TransferStage.DETECTED, token=Token.USDC))
        assert decision.tx is not None
        assert event_types(decision) == [SessionUpdated]
        assert decision.exceptions == ()


class TestCredit:
    def test_exact_payment_is_paid_with_fee(self) -> None:
        decision = apply(session(), obs(amount=10 * USDT))
        state = decision.state
        assert state.status is SessionStatus.PAID
        assert state.amount_received == 10 * USDT
        assert state.fee_amount == USDT  # 0.5 % is 0.05, below the 1-token floor
        assert state.net_amount == 9 * USDT
        assert decision.tx == TxRecord(
            tx_hash="0xaa",
            log_index=0,
            token=Token.USDT,
            amount=10 * USDT,
            from_address="TPayer",
            status=TransactionStatus.CONFIRMED,
            credited=True,
            confirmations=19,
        )
        assert event_types(decision) == [SessionUpdated]
        updated = decision.events[-1]
        assert isinstance(updated, SessionUpdated)
        assert updated.state == state
        assert updated.previous_status is SessionStatus.PENDING

    @pytest.mark.parametrize(
        ("amount", "status"),
        [
            (10 * USDT - TOLERANCE - 1, SessionStatus.UNDERPAID),
            (10 * USDT - TOLERANCE, SessionStatus.PAID),
            (10 * USDT + TOLERANCE, SessionStatus.PAID),
            (10 * USDT + TOLERANCE + 1, SessionStatus.OVERPAID),
        ],
    )
    def test_tolerance_edges(self, amount: int, status: SessionStatus) -> None:
        assert apply(session(), obs(amount=amount)).state.status is status

    def test_paid_within_tolerance_takes_fee_on_what_was_received(self) -> None:
        state = apply(session(), obs(amount=10 * USDT - TOLERANCE)).state
        assert state.fee_amount == fee_for(10 * USDT - TOLERANCE, POLICY)
        assert state.fee_amount + state.net_amount == 10 * USDT - TOLERANCE

    def test_overpayment_fee_on_whole_amount(self) -> None:
        state = apply(session(expected=300 * USDT), obs(amount=400 * USDT)).state
        assert state.status is SessionStatus.OVERPAID
        assert state.fee_amount == 2 * USDT  # 0.5 % of 400
        assert state.net_amount == 398 * USDT

    def test_underpayment_extends_expiry_and_takes_no_fee(self) -> None:
        now = T0 + timedelta(minutes=30)
        decision = apply(session(), obs(amount=4 * USDT), now=now)
        state = decision.state
        assert state.status is SessionStatus.UNDERPAID
        assert state.amount_received == 4 * USDT
        assert state.expires_at == now + timedelta(hours=24)
        assert (state.fee_amount, state.net_amount) == (0, 0)

    def test_underpayment_never_shortens_expiry(self) -> None:
        far = T0 + timedelta(days=3)
        state = apply(session(expires_at=far), obs(amount=4 * USDT)).state
        assert state.expires_at == far

    def test_each_underpayment_extends_from_its_own_time(self) -> None:
        state = pay(session(), 2 * USDT, "0x01")
        later = T0 + timedelta(hours=20)
        state = pay(state, 2 * USDT, "0x02", now=later)
        assert state.status is SessionStatus.UNDERPAID
        assert state.expires_at == later + timedelta(hours=24)

    def test_top_up_settles_an_underpaid_session(self) -> None:
        state = pay(session(), 4 * USDT, "0x01")
        decision = apply(state, obs(amount=6 * USDT, tx_hash="0x02"))
        assert decision.state.status is SessionStatus.PAID
        assert decision.state.amount_received == 10 * USDT
        assert decision.state.expires_at == state.expires_at  # no extension once settled
        updated = decision.events[-1]
        assert isinstance(updated, SessionUpdated)
        assert updated.previous_status is SessionStatus.UNDERPAID

    def test_confirmation_of_a_detected_transfer_credits_it_once(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        decision = apply(state, obs())
        assert decision.state.amount_received == 10 * USDT
        assert len(decision.state.transactions) == 1
        assert event_types(decision) == [SessionUpdated]

    def test_duplicate_confirmation_changes_nothing(self) -> None:
        state = apply(session(), obs(amount=4 * USDT)).state
        assert_noop(apply(state, obs(amount=4 * USDT), now=T0 + timedelta(hours=2)), state)

    def test_same_tx_hash_other_log_index_is_another_payment(self) -> None:
        state = apply(session(), obs(amount=4 * USDT)).state
        decision = apply(state, obs(amount=6 * USDT, log_index=1))
        assert decision.state.amount_received == 10 * USDT
        assert decision.state.status is SessionStatus.PAID

    def test_payment_after_expires_at_wins_before_the_expiry_tick(self) -> None:
        decision = apply(session(), obs(), now=EXPIRES + timedelta(minutes=5))
        assert decision.state.status is SessionStatus.PAID

    def test_zero_amount_transfer_is_ignored_and_keeps_pending(self) -> None:
        state = session()
        decision = apply(state, obs(amount=0))
        assert_noop(decision, state)
        assert decision.ignored is IgnoredReason.BELOW_MIN_CREDIT

    def test_rejects_naive_now(self) -> None:
        with pytest.raises(ValueError, match="timezone"):
            apply(session(), obs(), now=datetime(2025, 1, 1))


class TestWrongToken:
    def test_records_uncredited_and_raises(self) -> None:
        decision = apply(session(), obs(token=Token.USDC))
        assert decision.state.status is SessionStatus.PENDING
        assert decision.state.amount_received == 0
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.CONFIRMED
        assert not decision.tx.credited
        assert kinds(decision) == [ExceptionKind.WRONG_TOKEN]
        assert decision.exceptions[0].token is Token.USDC
        assert event_types(decision) == [SessionUpdated]

    def test_redelivery_raises_once(self) -> None:
        state = apply(session(), obs(token=Token.USDC)).state
        assert_noop(apply(state, obs(token=Token.USDC)), state)

    def test_aml_hit_comes_first(self) -> None:
        decision = apply(session(), obs(token=Token.USDC), AmlVerdict.hit("ofac"))
        assert kinds(decision) == [ExceptionKind.BLOCKED_FUNDS]
        assert decision.state.status is SessionStatus.BLOCKED


class TestAml:
    def test_hit_blocks_a_payable_session(self) -> None:
        decision = apply(session(), obs(), AmlVerdict.hit("ofac", "mixer"))
        state = decision.state
        assert state.status is SessionStatus.BLOCKED
        assert state.amount_received == 0
        tx = state.tx(KEY)
        assert tx is not None
        assert tx.status is TransactionStatus.BLOCKED
        assert tx.aml_flags == ("ofac", "mixer")
        assert not tx.credited
        assert kinds(decision) == [ExceptionKind.BLOCKED_FUNDS]
        assert "ofac, mixer" in decision.exceptions[0].detail
        assert event_types(decision) == [SessionBlocked, SessionUpdated]

    def test_hit_on_underpaid_keeps_earlier_credit_without_fee(self) -> None:
        state = pay(session(), 4 * USDT, "0x01")
        decision = apply(state, obs(amount=6 * USDT, tx_hash="0x02"), AmlVerdict.hit("ofac"))
        assert decision.state.status is SessionStatus.BLOCKED
        assert decision.state.amount_received == 4 * USDT
        assert (decision.state.fee_amount, decision.state.net_amount) == (0, 0)

    @pytest.mark.parametrize(
        "status", [SessionStatus.PAID, SessionStatus.EXPIRED, SessionStatus.BLOCKED]
    )
    def test_hit_on_terminal_session_raises_but_keeps_status(self, status: SessionStatus) -> None:
        decision = apply(session(status), obs(), AmlVerdict.hit("ofac"))
        assert decision.state.status is status
        assert kinds(decision) == [ExceptionKind.BLOCKED_FUNDS]
        assert event_types(decision) == [SessionUpdated]

    def test_blocked_transfer_stays_blocked_on_a_clear_redelivery(self) -> None:
        state = apply(session(), obs(), AmlVerdict.hit("ofac")).state
        assert_noop(apply(state, obs(), CLEAR), state)

    def test_unavailable_holds_the_transfer_uncredited(self) -> None:
        decision = apply(session(), obs(), AmlVerdict.unavailable())
        assert decision.state.status is SessionStatus.PENDING
        assert decision.state.amount_received == 0
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.CONFIRMING
        assert not decision.tx.credited
        assert kinds(decision) == [ExceptionKind.AML_UNAVAILABLE]

    def test_unavailable_then_clear_credits(self) -> None:
        state = apply(session(), obs(), AmlVerdict.unavailable()).state
        decision = apply(state, obs(), CLEAR)
        assert decision.state.status is SessionStatus.PAID
        assert decision.state.amount_received == 10 * USDT
        assert decision.tx is not None
        assert decision.tx.credited

    def test_unavailable_then_hit_blocks(self) -> None:
        state = apply(session(), obs(), AmlVerdict.unavailable()).state
        decision = apply(state, obs(), AmlVerdict.hit("ofac"))
        assert decision.state.status is SessionStatus.BLOCKED
        assert kinds(decision) == [ExceptionKind.BLOCKED_FUNDS]

    def test_unavailable_again_raises_again_without_changing_the_row(self) -> None:
        state = apply(session(), obs(), AmlVerdict.unavailable()).state
        decision = apply(state, obs(), AmlVerdict.unavailable())
        assert decision.state == state
        assert decision.tx is None
        assert decision.events == ()
        assert kinds(decision) == [ExceptionKind.AML_UNAVAILABLE]

    def test_unavailable_after_detected_updates_no_event(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        decision = apply(state, obs(), AmlVerdict.unavailable())
        assert decision.state == state
        assert kinds(decision) == [ExceptionKind.AML_UNAVAILABLE]

    def test_only_a_hit_carries_flags(self) -> None:
        with pytest.raises(ValueError, match="flags"):
            AmlVerdict(AmlVerdict.clear().outcome, ("ofac",))


class TestReverted:
    def test_revert_of_a_detection_marks_it_reverted(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        decision = apply(state, obs(TransferStage.REVERTED))
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.REVERTED
        assert decision.tx.confirmations == 0
        assert decision.exceptions == ()
        assert event_types(decision) == [SessionUpdated]

    def test_revert_of_an_unknown_transfer_changes_nothing(self) -> None:
        state = session()
        assert_noop(apply(state, obs(TransferStage.REVERTED)), state)

    def test_duplicate_revert_changes_nothing(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        state = apply(state, obs(TransferStage.REVERTED)).state
        assert_noop(apply(state, obs(TransferStage.REVERTED)), state)

    def test_detection_revives_a_reverted_transfer(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        state = apply(state, obs(TransferStage.REVERTED)).state
        decision = apply(state, obs(TransferStage.DETECTED))
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.CONFIRMING
        assert event_types(decision) == [PaymentDetected, SessionUpdated]

    def test_confirmation_revives_and_credits_a_reverted_transfer(self) -> None:
        state = apply(session(), obs(TransferStage.DETECTED)).state
        state = apply(state, obs(TransferStage.REVERTED)).state
        decision = apply(state, obs())
        assert decision.state.status is SessionStatus.PAID
        assert decision.state.amount_received == 10 * USDT

    def test_revert_of_a_credit_keeps_the_amount_and_raises(self) -> None:
        state = apply(session(), obs()).state
        decision = apply(state, obs(TransferStage.REVERTED))
        assert decision.state.amount_received == 10 * USDT
        assert decision.state.status is SessionStatus.PAID
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.REVERTED
        assert decision.tx.credited
        assert kinds(decision) == [ExceptionKind.REVERTED_CREDIT]
        assert event_types(decision) == [PaymentReverted, SessionUpdated]

    def test_revert_of_a_credit_raises_once(self) -> None:
        state = apply(session(), obs()).state
        state = apply(state, obs(TransferStage.REVERTED)).state
        assert_noop(apply(state, obs(TransferStage.REVERTED)), state)
        assert_noop(apply(state, obs(TransferStage.DETECTED)), state)

    def test_reconfirmed_credit_is_restored_not_credited_again(self) -> None:
        state = apply(session(), obs()).state
        state = apply(state, obs(TransferStage.REVERTED)).state
        decision = apply(state, obs())
        assert decision.state.amount_received == 10 * USDT
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.CONFIRMED
        assert decision.exceptions == ()
        assert_noop(apply(decision.state, obs()), decision.state)

    def test_revert_of_an_aml_held_transfer(self) -> None:
        state = apply(session(), obs(), AmlVerdict.unavailable()).state
        decision = apply(state, obs(TransferStage.REVERTED))
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.REVERTED
        assert decision.exceptions == ()

    def test_revert_of_a_late_payment_marks_it_and_raises_nothing_more(self) -> None:
        state = apply(session(SessionStatus.EXPIRED), obs()).state
        decision = apply(state, obs(TransferStage.REVERTED))
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.REVERTED
        assert decision.exceptions == ()


class TestTerminal:
    def test_late_full_payment_stays_expired(self) -> None:
        decision = apply(session(SessionStatus.EXPIRED), obs())
        assert decision.state.status is SessionStatus.EXPIRED
        assert decision.state.amount_received == 0
        assert decision.tx is not None
        assert decision.tx.status is TransactionStatus.CONFIRMED
        assert not decision.tx.credited
        assert kinds(decision) == [ExceptionKind.LATE_PAYMENT]
        assert decision.exceptions[0].detail == "10 USDT arrived after the session was Expired"

    @pytest.mark.parametrize("status", [SessionStatus.PAID, SessionStatus.OVERPAID])
    def test_extra_payment_after_settling_is_an_overpayment(self, status: SessionStatus) -> None:
        state = apply(
            session(), obs(amount=10 * USDT if status is SessionStatus.PAID else 11 * USDT)
        )
        assert state.state.status is status
        decision = apply(state.state, obs(amount=USDT, tx_hash="0x02"))
        assert decision.state.status is status
        assert decision.state.amount_received == state.state.amount_received
        assert decision.state.fee_amount == state.state.fee_amount
        assert kinds(decision) == [ExceptionKind.OVERPAYMENT]

    def test_payment_to_a_blocked_session_is_held(self) -> None:
        decision = apply(session(SessionStatus.BLOCKED), obs())
        assert decision.state.status is SessionStatus.BLOCKED
        assert decision.state.amount_received == 0
        assert kinds(decision) == [ExceptionKind.BLOCKED_FUNDS]

    def test_redelivered_late_payment_raises_once(self) -> None:
        state = apply(session(SessionStatus.EXPIRED), obs()).state
        assert_noop(apply(state, obs()), state)

    def test_detected_then_confirmed_on_an_expired_session(self) -> None:
        state = apply(session(SessionStatus.EXPIRED), obs(TransferStage.DETECTED)).state
        decision = apply(state, obs())
        assert kinds(decision) == [ExceptionKind.LATE_PAYMENT]
        assert decision.state.amount_received == 0


class TestExpire:
    """With the chain proven silent past ``expires_at``: only the clock decides."""

    def test_pending_past_expiry_expires(self) -> None:
        state = session()
        decision = expire(state, EXPIRES + timedelta(seconds=1), chain_time=SILENT)
        assert decision is not None
        assert decision.state.status is SessionStatus.EXPIRED
        assert event_types(decision) == [SessionExpired, SessionUpdated]
        assert decision.tx is None

    def test_expires_at_the_exact_instant(self) -> None:
        decision = expire(session(), EXPIRES, chain_time=SILENT)
        assert decision is not None
        assert decision.state.status is SessionStatus.EXPIRED

    def test_before_expiry_does_nothing(self) -> None:
        assert expire(session(), EXPIRES - timedelta(microseconds=1), chain_time=SILENT) is None

    def test_underpaid_expires_with_what_it_received(self) -> None:
        state = pay(session(), 4 * USDT, "0x01")
        assert expire(state, state.expires_at - timedelta(seconds=1), chain_time=SILENT) is None
        decision = expire(state, state.expires_at, chain_time=SILENT)
        assert decision is not None
        assert decision.state.status is SessionStatus.EXPIRED
        assert decision.state.amount_received == 4 * USDT
        expired = decision.events[0]
        assert isinstance(expired, SessionExpired)
        assert expired.amount_received == 4 * USDT
        assert (decision.state.fee_amount, decision.state.net_amount) == (0, 0)

    @pytest.mark.parametrize(
        "status",
        [
            SessionStatus.PAID,
            SessionStatus.OVERPAID,
            SessionStatus.EXPIRED,
            SessionStatus.BLOCKED,
        ],
    )
    def test_terminal_session_does_not_expire(self, status: SessionStatus) -> None:
        assert expire(session(status), EXPIRES + timedelta(days=1), chain_time=SILENT) is None


class TestResolveException:
    def expired_with_late(self, amount: int, tx_hash: str = KEY.tx_hash) -> SessionState:
        return apply(session(SessionStatus.EXPIRED), obs(amount=amount, tx_hash=tx_hash)).state

    def resolve(
        self,
        state: SessionState,
        key: TransferKey = KEY,
        kind: ExceptionKind = ExceptionKind.LATE_PAYMENT,
        action: ResolutionAction = ResolutionAction.ACCEPT,
    ) -> Decision:
        return resolve_exception(state, kind, key, action, T0, POLICY)

    def test_accepting_a_full_late_payment_settles(self) -> None:
        decision = self.resolve(self.expired_with_late(10 * USDT))
        state = decision.state
        assert state.status is SessionStatus.PAID
        assert state.amount_received == 10 * USDT
        assert (state.fee_amount, state.net_amount) == (USDT, 9 * USDT)
        assert decision.tx is not None
        assert decision.tx.credited
        assert event_types(decision) == [SessionResolved, SessionUpdated]
        resolved = decision.events[0]
        assert isinstance(resolved, SessionResolved)
        assert (resolved.kind, resolved.action) == (
            ExceptionKind.LATE_PAYMENT,
            ResolutionAction.ACCEPT,
        )
        assert resolved.resolved_at == T0

    def test_accepting_a_larger_late_payment_overpays(self) -> None:
        assert self.resolve(self.expired_with_late(12 * USDT)).state.status is (
            SessionStatus.OVERPAID
        )

    def test_accepting_a_partial_late_payment_stays_expired(self) -> None:
        decision = self.resolve(self.expired_with_late(4 * USDT))
        assert decision.state.status is SessionStatus.EXPIRED
        assert decision.state.amount_received == 4 * USDT
        assert (decision.state.fee_amount, decision.state.net_amount) == (0, 0)
        assert event_types(decision) == [SessionResolved, SessionUpdated]

    def test_two_accepted_partial_late_payments_settle(self) -> None:
        state = self.expired_with_late(4 * USDT, "0x01")
        state = apply(state, obs(amount=6 * USDT, tx_hash="0x02")).state
        state = self.resolve(state, TransferKey("0x01", 0)).state
        decision = self.resolve(state, TransferKey("0x02", 0))
        assert decision.state.status is SessionStatus.PAID
        assert decision.state.amount_received == 10 * USDT

    def test_a_second_late_payment_accepted_after_settling_overpays(self) -> None:
        state = self.expired_with_late(10 * USDT, "0x01")
        state = apply(state, obs(amount=5 * USDT, tx_hash="0x02")).state
        state = self.resolve(state, TransferKey("0x01", 0)).state
        decision = self.resolve(state, TransferKey("0x02", 0))
        assert decision.state.status is SessionStatus.OVERPAID
        assert decision.state.fee_amount == fee_for(15 * USDT, POLICY)

    def test_accepting_twice_is_a_noop(self) -> None:
        state = self.resolve(self.expired_with_late(10 * USDT)).state
        assert_noop(self.resolve(state), state)

    @pytest.mark.parametrize(
        "kind",
        [
            ExceptionKind.OVERPAYMENT,
            ExceptionKind.BLOCKED_FUNDS,
            ExceptionKind.WRONG_TOKEN,
            ExceptionKind.AML_UNAVAILABLE,
            ExceptionKind.REVERTED_CREDIT,
        ],
    )
    def test_accepting_another_kind_only_announces(self, kind: ExceptionKind) -> None:
        state = apply(session(SessionStatus.PAID), obs()).state
        decision = self.resolve(state, kind=kind)
        assert decision.state == state
        assert decision.tx is None
        assert event_types(decision) == [SessionResolved]

    @pytest.mark.parametrize(
        "action", [ResolutionAction.REFUND_REQUESTED, ResolutionAction.DISMISS]
    )
    def test_refund_or_dismiss_changes_nothing(self, action: ResolutionAction) -> None:
        state = self.expired_with_late(10 * USDT)
        assert_noop(self.resolve(state, action=action), state)

    def test_unknown_transfer_is_refused(self) -> None:
        with pytest.raises(ResolutionError, match="no transfer"):
            self.resolve(session(SessionStatus.EXPIRED))

    def test_reverted_late_payment_cannot_be_accepted(self) -> None:
        state = self.expired_with_late(10 * USDT)
        state = apply(state, obs(TransferStage.REVERTED)).state
        with pytest.raises(ResolutionError, match="Reverted"):
            self.resolve(state)

    def test_wrong_token_cannot_be_accepted_as_a_late_payment(self) -> None:
        state = apply(session(SessionStatus.EXPIRED), obs(token=Token.USDC)).state
        with pytest.raises(ResolutionError, match="USDC"):
            self.resolve(state)

    def test_late_payment_cannot_be_accepted_on_a_blocked_session(self) -> None:
        state = apply(session(SessionStatus.BLOCKED), obs()).state
        with pytest.raises(ResolutionError, match="Blocked"):
            self.resolve(state)

    @pytest.mark.parametrize(
        ("action", "status"),
        [
            (ResolutionAction.ACCEPT, ExceptionStatus.ACCEPTED),
            (ResolutionAction.REFUND_REQUESTED, ExceptionStatus.REFUND_REQUESTED),
            (ResolutionAction.DISMISS, ExceptionStatus.DISMISSED),
        ],
    )
    def test_action_names_the_exception_status(
        self, action: ResolutionAction, status: ExceptionStatus
    ) -> None:
        assert action.exception_status is status


class TestModel:
    def test_observation_rejects_negative_amount(self) -> None:
        with pytest.raises(ValueError, match="amount"):
            obs(amount=-1)

    def test_session_rejects_naive_expiry(self) -> None:
        with pytest.raises(ValueError, match="timezone"):
            session(expires_at=datetime(2025, 1, 1))

    def test_session_rejects_non_positive_expected(self) -> None:
        with pytest.raises(ValueError, match="amount_expected"):
            session(expected=0)

    def test_session_rejects_a_transfer_twice(self) -> None:
        tx = TxRecord.from_observation(obs(), TransactionStatus.CONFIRMED)
        with pytest.raises(ValueError, match="twice"):
            SessionState(
                id="cs_test",
                status=SessionStatus.PENDING,
                token=Token.USDT,
                decimals=6,
                amount_expected=1,
                expires_at=EXPIRES,
                transactions=(tx, tx),
            )

    def test_transactions_keep_first_seen_order(self) -> None:
        state = pay(session(), USDT, "0x01")
        state = pay(state, USDT, "0x02")
        state = apply(state, obs(TransferStage.REVERTED, tx_hash="0x01")).state
        assert [tx.tx_hash for tx in state.transactions] == ["0x01", "0x02"]
