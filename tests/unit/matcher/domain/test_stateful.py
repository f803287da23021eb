"""Any interleaving of transfers, screenings, clock ticks and resolutions keeps the books right.

A small pool of transfer identities is observed in any order, any number of times and at any
stage (duplicates, reorders, reorgs), with any AML verdict; the clock advances and expires the
session; late payments get resolved. After every step the session's money must still add up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from pago.common.enums import (
    ExceptionKind,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)
from pago.matcher.domain import (
    SETTLED,
    AmlOutcome,
    AmlVerdict,
    Decision,
    Observation,
    Policy,
    ResolutionAction,
    ResolutionError,
    SessionState,
    SessionUpdated,
    TransferKey,
    apply_observation,
    expire,
    fee_for,
    resolve_exception,
    status_for,
)

USDT = 10**6
EXPECTED = 10 * USDT
POLICY = Policy.defaults(6)
TOLERANCE = POLICY.underpayment_tolerance
MIN_CREDIT = USDT // 100
"""The default minimum credit (0.01 token): below it a transfer is dust."""
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
KEYS = (
    TransferKey("0xa", 0),
    TransferKey("0xa", 1),  # same transaction, second log: a distinct payment
    TransferKey("0xb", 0),
    TransferKey("0xc", 0),
)

amounts = st.one_of(
    st.sampled_from(
        [
            0,
            1,
            MIN_CREDIT - 1,
            TOLERANCE,
            EXPECTED // 2,
            EXPECTED - TOLERANCE - 1,
            EXPECTED - TOLERANCE,
            EXPECTED,
            EXPECTED + TOLERANCE + 1,
        ]
    ),
    st.integers(min_value=0, max_value=2 * EXPECTED),
)
# Mostly the session's token, so that most runs get as far as crediting.
tokens = st.sampled_from([Token.USDT, Token.USDT, Token.USDT, Token.USDC])
# Mostly clear, so that a hit does not end most runs at Blocked.
verdicts = st.sampled_from(
    [AmlVerdict.clear()] * 6 + [AmlVerdict.hit("ofac"), AmlVerdict.unavailable()]
)


@settings(max_examples=200, stateful_step_count=40, deadline=None)
class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.state = SessionState(
            id="cs_prop",
            status=SessionStatus.PENDING,
            token=Token.USDT,
            decimals=6,
            amount_expected=EXPECTED,
            expires_at=T0 + timedelta(hours=1),
        )
        # What the chain holds for each identity: a transfer's content never changes.
        self.transfers: dict[TransferKey, tuple[Token, int]] = {}
        # How each identity came to be credited: "confirmed" or "accepted" (late payment).
        self.credited_by: dict[TransferKey, str] = {}
        self.open_late_payments: set[TransferKey] = set()
        self.last_credit_at: datetime | None = None

    @initialize(
        contents=st.lists(st.tuples(tokens, amounts), min_size=len(KEYS), max_size=len(KEYS))
    )
    def chain(self, contents: list[tuple[Token, int]]) -> None:
        self.transfers = dict(zip(KEYS, contents, strict=True))

    # The happy path as a rule of its own, so that most runs credit something.
    @rule(index=st.integers(min_value=0, max_value=len(KEYS) - 1))
    def confirm_clean(self, index: int) -> None:
        self.observe(index, TransferStage.CONFIRMED, AmlVerdict.clear(), 19)

    @rule(
        index=st.integers(min_value=0, max_value=len(KEYS) - 1),
        stage=st.sampled_from(TransferStage),
        verdict=verdicts,
        confirmations=st.integers(min_value=0, max_value=30),
    )
    def observe(
        self, index: int, stage: TransferStage, verdict: AmlVerdict, confirmations: int
    ) -> None:
        key = KEYS[index]
        token, amount = self.transfers[key]
        observation = Observation(
            tx_hash=key.tx_hash,
            log_index=key.log_index,
            token=token,
            amount=amount,
            from_address="TPayer",
            stage=stage,
            confirmations=confirmations,
        )
        before = self.state
        decision = apply_observation(
            before, observation, verdict, self.now, POLICY, min_credit=MIN_CREDIT
        )
        self.check_decision(before, decision)
        if amount < MIN_CREDIT and before.tx(key) is None:
            # Dust never moves anything, whatever the stage or the verdict.
            assert decision.state == before
            assert not decision.changed

        was = before.tx(key)
        now_tx = decision.state.tx(key)
        if now_tx is not None and now_tx.credited and not (was is not None and was.credited):
            assert key not in self.credited_by, "an identity was credited twice"
            assert stage is TransferStage.CONFIRMED
            assert verdict.outcome is AmlOutcome.CLEAR
            assert token is before.token
            assert not before.status.is_terminal
            self.credited_by[key] = "confirmed"
            self.last_credit_at = self.now
        else:
            assert decision.state.amount_received == before.amount_received

        # Shown by --hypothesis-show-statistics: how often runs reach each status and exception.
        event(f"status {decision.state.status}")
        for exception in decision.exceptions:
            event(f"exception {exception.kind}")
        self.open_late_payments |= {
            e.key for e in decision.exceptions if e.kind is ExceptionKind.LATE_PAYMENT
        }
        # At-least-once delivery: the same message again must write nothing new. Only a failed
        # screening is worth recording again (the adapter upserts it).
        again = apply_observation(
            decision.state, observation, verdict, self.now, POLICY, min_credit=MIN_CREDIT
        )
        assert again.state == decision.state
        assert again.tx is None
        assert again.events == ()
        assert all(e.kind is ExceptionKind.AML_UNAVAILABLE for e in again.exceptions)
        self.state = decision.state

    # Mostly short steps against the 1 h window, sometimes a whole underpayment extension.
    @rule(
        minutes=st.one_of(
            st.integers(min_value=1, max_value=90), st.sampled_from([24 * 60, 24 * 60 + 1])
        )
    )
    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        before = self.state
        decision = expire(before, self.now, chain_time=self.now + timedelta(seconds=1))
        if decision is None:
            assert before.status.is_terminal or before.expires_at > self.now
            return
        assert not before.status.is_terminal
        assert before.expires_at <= self.now
        assert decision.state.status is SessionStatus.EXPIRED
        self.check_decision(before, decision)
        assert expire(decision.state, self.now, chain_time=self.now) is None
        self.state = decision.state

    # Not a @precondition: a rule disabled in most states makes Hypothesis abort whole runs
    # when it keeps drawing it; a no-op step costs nothing.
    @rule(
        pick=st.integers(min_value=0, max_value=len(KEYS) - 1),
        action=st.sampled_from(ResolutionAction),
    )
    def resolve_late_payment(self, pick: int, action: ResolutionAction) -> None:
        pending = sorted(self.open_late_payments)
        if not pending:
            return
        key = pending[pick % len(pending)]
        before = self.state
        tx = before.tx(key)
        assert tx is not None
        try:
            decision = resolve_exception(
                before, ExceptionKind.LATE_PAYMENT, key, action, self.now, POLICY
            )
        except ResolutionError:
            # Only a late payment that a reorg took off the chain since it was parked (reverted,
            # or re-mined but not yet confirmed again) can be refused here.
            assert action is ResolutionAction.ACCEPT
            assert tx.status in (TransactionStatus.REVERTED, TransactionStatus.CONFIRMING)
            return
        self.open_late_payments.discard(key)
        event(f"resolved {action} to {decision.state.status}")
        self.check_decision(before, decision)
        if action is ResolutionAction.ACCEPT:
            assert key not in self.credited_by, "an identity was credited twice"
            after = decision.state.tx(key)
            assert after is not None
            assert after.credited
            self.credited_by[key] = "accepted"
        else:
            assert not decision.changed
        self.state = decision.state

    def check_decision(self, before: SessionState, decision: Decision) -> None:
        after = decision.state
        updates = [e for e in decision.events if isinstance(e, SessionUpdated)]
        if after == before:
            assert updates == []
        else:
            assert decision.events[-1] == SessionUpdated(state=after, previous_status=before.status)
            assert len(updates) == 1
        if decision.tx is None:
            assert after.transactions == before.transactions
        else:
            assert after.tx(decision.tx.key) == decision.tx
            assert before.tx(decision.tx.key) != decision.tx
            others = [tx for tx in after.transactions if tx.key != decision.tx.key]
            assert others == [tx for tx in before.transactions if tx.key != decision.tx.key]
        assert after.amount_received >= before.amount_received
        if before.status.is_terminal:
            assert after.status.is_terminal, "a terminal session became payable again"
        if before.status is SessionStatus.BLOCKED:
            assert after.status is SessionStatus.BLOCKED

    @invariant()
    def received_is_the_sum_of_credits(self) -> None:
        credited = [tx for tx in self.state.transactions if tx.credited]
        assert self.state.amount_received == sum(tx.amount for tx in credited)
        assert {tx.key for tx in credited} == set(self.credited_by)

    @invariant()
    def one_record_per_identity(self) -> None:
        keys = [tx.key for tx in self.state.transactions]
        assert len(keys) == len(set(keys))

    @invariant()
    def only_clean_right_token_money_is_credited(self) -> None:
        for tx in self.state.transactions:
            if tx.credited:
                assert tx.token is self.state.token
                assert tx.aml_flags == ()
                assert tx.status in (TransactionStatus.CONFIRMED, TransactionStatus.REVERTED)
            if tx.status is TransactionStatus.BLOCKED:
                assert tx.aml_flags == ("ofac",)

    @invariant()
    def status_follows_the_amount(self) -> None:
        state = self.state
        earned = status_for(state.amount_received, state.amount_expected, TOLERANCE)
        if not state.status.is_terminal:
            assert state.status is earned
            assert (state.status is SessionStatus.PENDING) == (state.amount_received == 0)
        if state.status in SETTLED:
            assert state.status is earned
            assert state.fee_amount == fee_for(state.amount_received, POLICY)
            assert state.net_amount == state.amount_received - state.fee_amount
        else:
            assert (state.fee_amount, state.net_amount) == (0, 0)
        if state.status in (SessionStatus.EXPIRED, SessionStatus.BLOCKED):
            # Both are entered from Pending/Underpaid; an accepted late payment that reaches the
            # expected amount settles the session instead of leaving it Expired.
            assert earned in (SessionStatus.PENDING, SessionStatus.UNDERPAID)

    @invariant()
    def underpaid_stays_payable_after_its_last_credit(self) -> None:
        if self.state.status is SessionStatus.UNDERPAID:
            assert self.last_credit_at is not None
            assert self.state.expires_at >= self.last_credit_at + POLICY.underpaid_extension


TestSessionMachine = SessionMachine.TestCase
