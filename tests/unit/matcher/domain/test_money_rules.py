"""Issue 11's rules in the pure domain: minimum credit, expiry only when the chain is proven
silent (with a grace bound), in-time payments after a clock expiry, reverted credits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pago.common.enums import (
    ExceptionKind,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)
from pago.matcher.domain import (
    DEFAULT_EXPIRY_GRACE,
    AmlVerdict,
    Decision,
    IgnoredReason,
    Observation,
    PartitionProgress,
    PaymentDetected,
    PaymentReverted,
    Policy,
    SessionState,
    SessionUpdated,
    apply_observation,
    below_min_credit,
    chain_time,
    expire,
    expiry_due,
    in_flight_before_expiry,
)

USDT = 10**6
MIN = USDT // 100
"""0.01 USDT: the default minimum credit of a 6-decimal token."""
POLICY = Policy.defaults(6)
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
BEFORE = EXPIRES - timedelta(seconds=30)
"""A block time inside the session's window."""
AFTER = EXPIRES + timedelta(seconds=30)
GRACE = DEFAULT_EXPIRY_GRACE
SANCTIONED = AmlVerdict.hit("ofac_sdn")


def session(status: SessionStatus = SessionStatus.PENDING, **over: object) -> SessionState:
    values: dict[str, object] = {
        "id": "cs_rules",
        "status": status,
        "token": Token.USDT,
        "decimals": 6,
        "amount_expected": 10 * USDT,
        "expires_at": EXPIRES,
    }
    values.update(over)
    return SessionState(**values)  # type: ignore[arg-type]


def obs(
    stage: TransferStage = TransferStage.CONFIRMED,
    amount: int = 10 * USDT,
    *,
    tx_hash: str = "0xaa",
    token: Token = Token.USDT,
    block_time: datetime | None = BEFORE,
) -> Observation:
    return Observation(
        tx_hash=tx_hash,
        log_index=0,
        token=token,
        amount=amount,
        from_address="0xsender",
        stage=stage,
        confirmations=12,
        block_time=block_time,
    )


def apply(
    state: SessionState,
    o: Observation,
    verdict: AmlVerdict | None = None,
    now: datetime = T0,
) -> Decision:
    return apply_observation(state, o, verdict or AmlVerdict.clear(), now, POLICY, min_credit=MIN)


class TestBelowMinCredit:
    @pytest.mark.parametrize(
        ("amount", "minimum", "dust"),
        [(0, MIN, True), (MIN - 1, MIN, True), (MIN, MIN, False), (0, 0, True), (1, 0, False)],
    )
    def test_the_minimum_is_at_least_one_base_unit(
        self, amount: int, minimum: int, dust: bool
    ) -> None:
        assert below_min_credit(amount, minimum) is dust

    def test_a_negative_amount_is_refused(self) -> None:
        with pytest.raises(ValueError, match=">= 0"):
            below_min_credit(-1, MIN)


class TestDust:
    @pytest.mark.parametrize("stage", [TransferStage.DETECTED, TransferStage.CONFIRMED])
    @pytest.mark.parametrize("amount", [0, 1, MIN - 1])
    def test_dust_moves_nothing_at_any_stage(self, stage: TransferStage, amount: int) -> None:
        state = session()
        decision = apply(state, obs(stage, amount))
        assert decision.ignored is IgnoredReason.BELOW_MIN_CREDIT
        assert decision.state == state
        assert (decision.tx, decision.exceptions, decision.events) == (None, (), ())
        assert not decision.changed

    def test_zero_value_from_a_sanctioned_sender_never_blocks(self) -> None:
        state = session()
        decision = apply(state, obs(amount=0), SANCTIONED)
        assert decision.state.status is SessionStatus.PENDING
        assert decision.exceptions == ()
        # The real payment afterwards settles the session as usual.
        paid = apply(decision.state, obs(tx_hash="0xbb")).state
        assert paid.status is SessionStatus.PAID

    def test_dust_does_not_make_a_session_underpaid_nor_extend_it(self) -> None:
        state = session()
        decision = apply(state, obs(amount=1), now=T0 + timedelta(minutes=59))
        assert decision.state.status is SessionStatus.PENDING
        assert decision.state.expires_at == EXPIRES

    def test_dust_on_an_underpaid_session_changes_nothing(self) -> None:
        underpaid = apply(session(), obs(amount=4 * USDT)).state
        decision = apply(underpaid, obs(amount=MIN - 1, tx_hash="0xdd"))
        assert decision.state == underpaid
        assert decision.ignored is IgnoredReason.BELOW_MIN_CREDIT

    def test_exactly_the_minimum_credits(self) -> None:
        decision = apply(session(), obs(amount=MIN))
        assert decision.ignored is None
        assert decision.state.status is SessionStatus.UNDERPAID
        assert decision.state.amount_received == MIN

    def test_a_credit_made_before_the_minimum_existed_is_still_followed(self) -> None:
        # Credited by an older matcher (minimum 0): its revert must still reach a human.
        credited = apply_observation(
            session(), obs(amount=1), AmlVerdict.clear(), T0, POLICY, min_credit=1
        ).state
        decision = apply(credited, obs(TransferStage.REVERTED, amount=1))
        assert decision.ignored is None
        assert [e.kind for e in decision.exceptions] == [ExceptionKind.REVERTED_CREDIT]


def record(stage: TransferStage = TransferStage.DETECTED, **over: object) -> SessionState:
    """A session that has seen one transfer at ``stage`` (block time ``BEFORE`` by default)."""
    return apply(session(), obs(stage, **over)).state  # type: ignore[arg-type]


class TestExpiryDue:
    def test_not_before_expires_at_even_with_a_silent_chain(self) -> None:
        assert not expiry_due(session(), EXPIRES - timedelta(seconds=1), chain_time=AFTER)

    def test_no_progress_waits_until_the_grace_bound(self) -> None:
        state = session()
        assert not expiry_due(state, EXPIRES + timedelta(seconds=1), chain_time=None)
        assert not expiry_due(state, EXPIRES + GRACE, chain_time=None)
        assert expiry_due(state, EXPIRES + GRACE + timedelta(microseconds=1), chain_time=None)

    def test_progress_must_pass_expires_at(self) -> None:
        state = session()
        now = EXPIRES + timedelta(minutes=5)
        assert not expiry_due(state, now, chain_time=BEFORE)
        assert not expiry_due(state, now, chain_time=EXPIRES)
        assert expiry_due(state, now, chain_time=AFTER)

    def test_a_payment_in_flight_holds_expiry_until_the_grace_bound(self) -> None:
        state = record(TransferStage.DETECTED)
        assert in_flight_before_expiry(state)
        now = EXPIRES + timedelta(minutes=5)
        assert not expiry_due(state, now, chain_time=AFTER)
        assert expiry_due(state, EXPIRES + GRACE + timedelta(seconds=1), chain_time=AFTER)

    def test_an_aml_held_payment_holds_expiry_too(self) -> None:
        state = apply(session(), obs(), AmlVerdict.unavailable()).state
        assert not expiry_due(state, EXPIRES + timedelta(minutes=5), chain_time=AFTER)

    @pytest.mark.parametrize(
        ("block_time", "token"),
        [
            (None, Token.USDT),  # an old watcher: the clock alone decides, as before
            (EXPIRES, Token.USDT),  # mined at or after expires_at: not in time
            (BEFORE, Token.USDC),  # the wrong token never pays the session
        ],
    )
    def test_other_undecided_transfers_do_not_hold_it(
        self, block_time: datetime | None, token: Token
    ) -> None:
        state = record(TransferStage.DETECTED, block_time=block_time, token=token)
        assert expiry_due(state, EXPIRES + timedelta(minutes=5), chain_time=AFTER)

    def test_decided_transfers_do_not_hold_it(self) -> None:
        state = apply(record(TransferStage.DETECTED, amount=4 * USDT), obs(amount=4 * USDT))
        underpaid = state.state
        now = underpaid.expires_at + timedelta(minutes=1)
        assert expiry_due(underpaid, now, chain_time=now)

    def test_a_negative_grace_is_refused(self) -> None:
        with pytest.raises(ValueError, match="grace"):
            expiry_due(session(), AFTER, chain_time=AFTER, grace=timedelta(seconds=-1))

    def test_expire_marks_the_session_timed_out(self) -> None:
        decision = expire(session(), AFTER, chain_time=AFTER + timedelta(seconds=1))
        assert decision is not None
        assert decision.state.status is SessionStatus.EXPIRED
        assert decision.state.timed_out
        assert expire(session(), AFTER, chain_time=None) is None


def timed_out(state: SessionState | None = None) -> SessionState:
    decision = expire(state or session(), EXPIRES + GRACE + timedelta(seconds=1), chain_time=None)
    assert decision is not None
    return decision.state


class TestInTimePaymentAfterAClockExpiry:
    def test_detected_in_time_then_confirmed_after_the_expiry_pays(self) -> None:
        state = timed_out(record(TransferStage.DETECTED))
        decision = apply(state, obs(), now=EXPIRES + GRACE + timedelta(minutes=1))
        assert decision.state.status is SessionStatus.PAID
        assert not decision.state.timed_out
        assert decision.exceptions == ()
        [update] = [e for e in decision.events if isinstance(e, SessionUpdated)]
        assert update.previous_status is SessionStatus.EXPIRED
        assert decision.state.fee_amount + decision.state.net_amount == 10 * USDT

    def test_a_partial_in_time_payment_reopens_it_underpaid(self) -> None:
        now = EXPIRES + GRACE + timedelta(minutes=1)
        decision = apply(timed_out(), obs(amount=4 * USDT), now=now)
        assert decision.state.status is SessionStatus.UNDERPAID
        assert decision.state.expires_at == now + POLICY.underpaid_extension

    def test_detection_in_time_is_announced(self) -> None:
        decision = apply(timed_out(), obs(TransferStage.DETECTED))
        assert any(isinstance(e, PaymentDetected) for e in decision.events)

    @pytest.mark.parametrize("block_time", [None, EXPIRES, AFTER])
    def test_a_payment_not_proven_in_time_is_a_late_payment(
        self, block_time: datetime | None
    ) -> None:
        state = timed_out()
        decision = apply(state, obs(block_time=block_time))
        assert decision.state.status is SessionStatus.EXPIRED
        assert [e.kind for e in decision.exceptions] == [ExceptionKind.LATE_PAYMENT]

    def test_a_session_the_merchant_expired_stays_expired(self) -> None:
        # POST /expire sets Expired without timed_out: an in-time payment is still late.
        state = session(SessionStatus.EXPIRED)
        decision = apply(state, obs(block_time=BEFORE))
        assert decision.state.status is SessionStatus.EXPIRED
        assert [e.kind for e in decision.exceptions] == [ExceptionKind.LATE_PAYMENT]

    def test_a_sanctioned_in_time_payment_is_blocked_funds_and_stays_expired(self) -> None:
        decision = apply(timed_out(), obs(), SANCTIONED)
        assert decision.state.status is SessionStatus.EXPIRED
        assert [e.kind for e in decision.exceptions] == [ExceptionKind.BLOCKED_FUNDS]

    def test_a_block_time_seen_at_detection_stands_when_the_confirmation_lacks_it(self) -> None:
        state = timed_out(record(TransferStage.DETECTED))
        decision = apply(state, obs(block_time=None))
        assert decision.state.status is SessionStatus.PAID
        assert decision.tx is not None
        assert decision.tx.block_time == BEFORE


class TestReverted:
    def test_a_reverted_credit_emits_payment_reverted_then_the_update(self) -> None:
        paid = apply(session(), obs()).state
        decision = apply(paid, obs(TransferStage.REVERTED))
        assert [type(e) for e in decision.events] == [PaymentReverted, SessionUpdated]
        reverted = decision.events[0]
        assert isinstance(reverted, PaymentReverted)
        assert reverted.tx.status is TransactionStatus.REVERTED
        assert reverted.tx.credited
        # The credit stands; a human decides.
        assert decision.state.status is SessionStatus.PAID
        assert [e.kind for e in decision.exceptions] == [ExceptionKind.REVERTED_CREDIT]

    def test_a_reverted_detection_is_no_reverted_payment(self) -> None:
        detected = record(TransferStage.DETECTED)
        decision = apply(detected, obs(TransferStage.REVERTED))
        assert not any(isinstance(e, PaymentReverted) for e in decision.events)

    def test_a_redelivered_revert_emits_nothing(self) -> None:
        reverted = apply(apply(session(), obs()).state, obs(TransferStage.REVERTED)).state
        assert not apply(reverted, obs(TransferStage.REVERTED)).changed


def progress(*times: datetime, partitions: int | None = None) -> list[PartitionProgress]:
    count = partitions or len(times)
    return [PartitionProgress(p, count, t) for p, t in enumerate(times)]


class TestChainTime:
    def test_none_without_markers(self) -> None:
        assert chain_time([]) is None

    def test_every_partition_is_needed(self) -> None:
        assert chain_time(progress(AFTER, AFTER, partitions=3)) is None

    def test_the_slowest_partition_decides(self) -> None:
        assert chain_time(progress(AFTER, BEFORE, AFTER)) == BEFORE

    def test_the_largest_partition_count_wins(self) -> None:
        rows = [*progress(AFTER, AFTER), PartitionProgress(2, 4, AFTER)]
        assert chain_time(rows) is None
