"""The routing scorer: one test per rule, and properties over random inputs."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pago.api.cards.providers.base import Address, Capabilities, CardOrder, OrderItem
from pago.api.cards.routing.model import (
    BreakerState,
    CandidateScore,
    Decision,
    FeeSchedule,
    Health,
    RouteStats,
    RoutingRules,
    Weights,
)
from pago.api.cards.routing.scorer import score
from pago.common.enums import CardProvider

STRIPE, ADYEN, PAYPAL = CardProvider.STRIPE, CardProvider.ADYEN, CardProvider.PAYPAL
ALL = (STRIPE, ADYEN, PAYPAL)
ANYWHERE = Capabilities(currencies=frozenset({"AUD", "USD", "JPY"}), countries=None)
FEES = {
    STRIPE: FeeSchedule(Decimal("2.9"), {"AUD": 30}),
    ADYEN: FeeSchedule(Decimal("2.9"), {"AUD": 30}),
    PAYPAL: FeeSchedule(Decimal("2.9"), {"AUD": 30}),
}


def order(*, total: int = 14076, currency: str = "AUD", country: str = "AU") -> CardOrder:
    address = Address("123 Collins Street", None, "Melbourne", "VIC", "3000", country)
    return CardOrder(
        session_id=str(uuid.uuid4()),
        order_reference="ORD-2024-001",
        currency=currency,
        exponent=2,
        total=total,
        shipping=0,
        tax=0,
        items=[OrderItem("Wireless Headphones", "WH-100", 1, total)],
        locale="en_AU",
        customer_email="jane.smith@example.com",
        customer_first_name="Jane",
        customer_last_name="Smith",
        customer_phone=None,
        billing_address=address,
        shipping_address=address,
        success_url="https://merchant.example.com/checkout/success",
        failure_url="https://merchant.example.com/checkout/failure",
        expires_at=datetime(2024, 1, 15, 12, tzinfo=UTC),
    )


def healthy(calls: int = 0, errors: int = 0, p50: int | None = 200) -> Health:
    return Health(BreakerState.CLOSED, calls, errors, p50)


def decide(
    *,
    the_order: CardOrder | None = None,
    candidates: Mapping[CardProvider, Capabilities] | None = None,
    stats: Mapping[CardProvider, RouteStats] | None = None,
    health: Mapping[CardProvider, Health] | None = None,
    fees: Mapping[CardProvider, FeeSchedule] = FEES,
    rules: RoutingRules | None = None,
    session_id: str = "session-1",
) -> Decision:
    return score(
        the_order or order(),
        candidates if candidates is not None else dict.fromkeys(ALL, ANYWHERE),
        stats=stats or {},
        health=health if health is not None else {p: healthy() for p in ALL},
        fees=fees,
        rules=rules or RoutingRules(),
        weights=Weights(),
        session_id=session_id,
    )


def ranked(decision: Decision) -> list[CardProvider]:
    return [c.provider for c in decision.ranked]


def component(candidate: CandidateScore, name: str) -> Decimal:
    return next(c.value for c in candidate.components if c.name == name)


def by_provider(decision: Decision, provider: CardProvider) -> CandidateScore:
    return next(c for c in (*decision.ranked, *decision.rejected) if c.provider is provider)


class TestEligibility:
    def test_an_unsupported_currency_is_rejected_with_the_reason(self) -> None:
        caps = {STRIPE: ANYWHERE, ADYEN: Capabilities(frozenset({"USD"}), None)}
        decision = decide(candidates=caps)
        assert ranked(decision) == [STRIPE]
        [rejected] = decision.rejected
        assert rejected.provider is ADYEN
        assert not rejected.eligible
        assert rejected.score == Decimal("0.0")
        assert rejected.reason == "currency AUD not supported"

    def test_an_unsupported_billing_country_is_rejected(self) -> None:
        caps = {STRIPE: ANYWHERE, PAYPAL: Capabilities(frozenset({"AUD"}), frozenset({"NZ"}))}
        decision = decide(candidates=caps)
        assert ranked(decision) == [STRIPE]
        assert decision.rejected[0].reason == "billing country AU not supported"

    def test_amount_limits_are_per_currency_in_minor_units(self) -> None:
        limited = Capabilities(frozenset({"AUD"}), None, {"AUD": 100}, {"AUD": 10_000})
        assert ranked(decide(the_order=order(total=99), candidates={ADYEN: limited})) == []
        assert ranked(decide(the_order=order(total=100), candidates={ADYEN: limited})) == [ADYEN]
        assert ranked(decide(the_order=order(total=10_000), candidates={ADYEN: limited})) == [ADYEN]
        too_much = decide(the_order=order(total=10_001), candidates={ADYEN: limited})
        assert too_much.rejected[0].reason == (
            "total 10001 above the maximum 10000 AUD minor units"
        )


class TestComponents:
    def test_the_score_is_the_weighted_sum_of_the_shown_values_rounded_half_up(self) -> None:
        decision = decide(
            stats={STRIPE: RouteStats(40, 30, 8)},
            health={STRIPE: healthy(50, 3, 180), ADYEN: healthy(10, 0, 240)},
        )
        for candidate in decision.ranked:
            assert {c.name for c in candidate.components} == {
                "eligibility",
                "conversion",
                "availability",
                "cost",
                "latency",
            }
            assert all(c.detail for c in candidate.components)
            total = sum((c.weight * c.value for c in candidate.components), Decimal(0)) * 100
            assert candidate.score == total.quantize(Decimal("0.1"), rounding="ROUND_HALF_UP")

    def test_conversion_is_smoothed_toward_the_pooled_rate(self) -> None:
        # Pooled: (9 + 0 + 20 x 0.5) / (10 + 0 + 20) = 19/30. Stripe: (9 + 20 x 19/30) / 30.
        decision = decide(stats={STRIPE: RouteStats(12, 9, 1), ADYEN: RouteStats(0, 0, 0)})
        assert component(by_provider(decision, STRIPE), "conversion") == Decimal("0.7222")
        assert component(by_provider(decision, ADYEN), "conversion") == Decimal("0.6333")
        assert component(by_provider(decision, PAYPAL), "conversion") == Decimal("0.6333")

    def test_one_success_is_not_a_perfect_conversion(self) -> None:
        decision = decide(stats={STRIPE: RouteStats(1, 1, 0)})
        assert Decimal("0.5") < component(by_provider(decision, STRIPE), "conversion") < 1

    def test_a_better_converting_provider_wins(self) -> None:
        stats = {STRIPE: RouteStats(100, 60, 40), ADYEN: RouteStats(100, 90, 10)}
        assert ranked(decide(stats=stats))[0] is ADYEN

    def test_recent_errors_lower_availability_and_the_score(self) -> None:
        health = {STRIPE: healthy(20, 10), ADYEN: healthy(20, 0), PAYPAL: healthy(20, 0)}
        decision = decide(health=health)
        stripe, adyen = by_provider(decision, STRIPE), by_provider(decision, ADYEN)
        assert component(stripe, "availability") == Decimal("0.7250")  # (10 + 19) / 40
        assert component(adyen, "availability") == Decimal("0.9750")  # (20 + 19) / 40
        assert stripe.score < adyen.score
        assert ranked(decision)[-1] is STRIPE

    def test_an_open_breaker_is_not_a_candidate(self) -> None:
        health = {STRIPE: Health(BreakerState.OPEN, 5, 5, 200), ADYEN: healthy()}
        decision = decide(health=health)
        assert STRIPE not in ranked(decision)
        assert by_provider(decision, STRIPE).reason == (
            "circuit breaker open: recent create calls failed"
        )

    def test_a_half_open_breaker_is_allowed_but_penalised(self) -> None:
        health = {p: healthy() for p in ALL} | {STRIPE: Health(BreakerState.HALF_OPEN, 0, 0, 200)}
        decision = decide(health=health)
        assert ranked(decision)[-1] is STRIPE
        stripe = by_provider(decision, STRIPE)
        assert component(stripe, "availability") == Decimal("0.4750")
        assert "half-open" in next(c.detail for c in stripe.components if c.name == "availability")

    def test_cost_is_exact_in_minor_units_and_the_cheapest_is_best(self) -> None:
        fees = {
            STRIPE: FeeSchedule(Decimal("2.9"), {"AUD": 30}),  # 408.204 -> 408 + 30 = 438
            ADYEN: FeeSchedule(Decimal("0.6"), {"AUD": 13}),  # 84.456 -> 84 + 13 = 97
            PAYPAL: FeeSchedule(Decimal("3.49"), {}),  # 491.2524 -> 491 + 0
        }
        decision = decide(fees=fees)
        adyen, stripe = by_provider(decision, ADYEN), by_provider(decision, STRIPE)
        assert component(adyen, "cost") == 1
        assert component(stripe, "cost") == Decimal("0.2215")  # 97 / 438
        assert "fee 438 AUD minor units" in next(
            c.detail for c in stripe.components if c.name == "cost"
        )
        assert ranked(decision)[0] is ADYEN

    def test_a_missing_fee_schedule_is_neutral(self) -> None:
        decision = decide(fees={STRIPE: FEES[STRIPE]})
        assert component(by_provider(decision, ADYEN), "cost") == Decimal("0.5")
        assert component(by_provider(decision, STRIPE), "cost") == 1

    def test_the_faster_provider_scores_higher_latency(self) -> None:
        health = {STRIPE: healthy(p50=400), ADYEN: healthy(p50=100), PAYPAL: healthy(p50=None)}
        decision = decide(health=health)
        assert component(by_provider(decision, ADYEN), "latency") == 1
        assert component(by_provider(decision, STRIPE), "latency") == Decimal("0.25")
        assert component(by_provider(decision, PAYPAL), "latency") == Decimal("0.5")
        assert ranked(decision)[0] is ADYEN

    def test_equal_scores_are_ranked_by_name(self) -> None:
        decision = decide()
        assert len({c.score for c in decision.ranked}) == 1
        assert ranked(decision) == [ADYEN, PAYPAL, STRIPE]
        assert decision.rule is None


class TestRules:
    def test_exclude_rejects_even_the_best(self) -> None:
        stats = {ADYEN: RouteStats(100, 99, 1)}
        decision = decide(stats=stats, rules=RoutingRules(exclude=frozenset({ADYEN})))
        assert ranked(decision) == [PAYPAL, STRIPE]
        assert by_provider(decision, ADYEN).reason == "excluded by merchant rule"

    def test_pin_puts_the_pinned_provider_first_and_keeps_its_score(self) -> None:
        stats = {ADYEN: RouteStats(100, 99, 1), STRIPE: RouteStats(100, 50, 50)}
        decision = decide(stats=stats, rules=RoutingRules(pin=STRIPE))
        assert ranked(decision) == [STRIPE, ADYEN, PAYPAL]
        assert decision.rule == "pin"
        assert decision.ranked[0].score < decision.ranked[1].score

    def test_pin_yields_when_the_pinned_provider_is_unavailable(self) -> None:
        health = {p: healthy() for p in ALL} | {STRIPE: Health(BreakerState.OPEN, 5, 5, None)}
        decision = decide(health=health, rules=RoutingRules(pin=STRIPE))
        assert ranked(decision) == [ADYEN, PAYPAL]
        assert decision.rule is None

    def test_exclude_wins_over_pin(self) -> None:
        rules = RoutingRules(pin=STRIPE, exclude=frozenset({STRIPE}))
        assert STRIPE not in ranked(decide(rules=rules))

    def test_split_is_deterministic_per_session(self) -> None:
        rules = RoutingRules(split={STRIPE: 50, ADYEN: 50})
        first = [ranked(decide(rules=rules, session_id=f"s{i}"))[0] for i in range(50)]
        again = [ranked(decide(rules=rules, session_id=f"s{i}"))[0] for i in range(50)]
        assert first == again
        assert set(first) == {STRIPE, ADYEN}
        decision = decide(rules=rules, session_id="s1")
        assert decision.rule == "split"
        assert len(decision.ranked) == 3  # the rest stay as the failover order

    def test_split_renormalises_over_the_eligible_providers(self) -> None:
        rules = RoutingRules(split={STRIPE: 90, ADYEN: 10})
        caps = {ADYEN: ANYWHERE, PAYPAL: ANYWHERE, STRIPE: Capabilities(frozenset({"USD"}), None)}
        picks = {
            ranked(decide(candidates=caps, rules=rules, session_id=f"s{i}"))[0] for i in range(20)
        }
        assert picks == {ADYEN}


# Properties ------------------------------------------------------------------------------

providers = st.sampled_from(ALL)
stats_st = st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(0, 500)).map(
    lambda t: RouteStats(attempts=t[0] + t[1] + t[2], completed=t[0], failed=t[1])
)
health_st = st.builds(
    lambda state, calls, errors, p50: Health(state, calls, min(errors, calls), p50),
    st.sampled_from(BreakerState),
    st.integers(0, 200),
    st.integers(0, 200),
    st.none() | st.integers(0, 30_000),
)
fee_st = st.builds(
    FeeSchedule,
    st.decimals(min_value=0, max_value=10, places=2),
    st.fixed_dictionaries({}, optional={"AUD": st.integers(0, 500)}),
)
caps_st = st.builds(
    Capabilities,
    st.frozensets(st.sampled_from(["AUD", "USD"]), min_size=1),
    st.none() | st.frozensets(st.sampled_from(["AU", "NZ"])),
    st.fixed_dictionaries({}, optional={"AUD": st.integers(0, 20_000)}),
    st.fixed_dictionaries({}, optional={"AUD": st.integers(0, 20_000)}),
)
rules_st = st.builds(
    RoutingRules,
    st.none() | providers,
    st.frozensets(providers),
    st.none() | st.dictionaries(providers, st.integers(0, 100)),
)


@st.composite
def inputs(draw: st.DrawFn) -> dict[str, object]:
    return {
        "the_order": order(total=draw(st.integers(1, 20_000))),
        "candidates": draw(st.dictionaries(providers, caps_st)),
        "stats": draw(st.dictionaries(providers, stats_st)),
        "health": draw(st.dictionaries(providers, health_st)),
        "fees": draw(st.dictionaries(providers, fee_st)),
        "rules": draw(rules_st),
        "session_id": draw(st.text(max_size=40)),
    }


def eligible(caps: Capabilities, the_order: CardOrder) -> bool:
    return (
        the_order.currency in caps.currencies
        and (caps.countries is None or the_order.billing_address.country in caps.countries)
        and caps.min_amount.get("AUD", 0) <= the_order.total <= caps.max_amount.get("AUD", 10**9)
    )


class TestProperties:
    @given(inputs())
    def test_scores_are_0_to_100_with_one_decimal(self, kwargs: dict[str, object]) -> None:
        decision = decide(**kwargs)  # type: ignore[arg-type]
        for candidate in (*decision.ranked, *decision.rejected):
            assert Decimal(0) <= candidate.score <= Decimal(100)
            assert candidate.score.as_tuple().exponent == -1
            assert all(Decimal(0) <= c.value <= Decimal(1) for c in candidate.components)

    @given(inputs())
    def test_every_candidate_is_ranked_or_rejected_once(self, kwargs: dict[str, object]) -> None:
        decision = decide(**kwargs)  # type: ignore[arg-type]
        seen = Counter(c.provider for c in (*decision.ranked, *decision.rejected))
        assert seen == Counter(list(kwargs["candidates"]))  # type: ignore[call-overload]

    @given(inputs())
    def test_ineligible_excluded_and_open_are_never_ranked(self, kwargs: dict[str, object]) -> None:
        decision = decide(**kwargs)  # type: ignore[arg-type]
        candidates: dict[CardProvider, Capabilities] = kwargs["candidates"]  # type: ignore[assignment]
        health: dict[CardProvider, Health] = kwargs["health"]  # type: ignore[assignment]
        rules: RoutingRules = kwargs["rules"]  # type: ignore[assignment]
        for candidate in decision.ranked:
            assert eligible(candidates[candidate.provider], kwargs["the_order"])  # type: ignore[arg-type]
            assert candidate.provider not in rules.exclude
            assert health.get(candidate.provider, healthy()).breaker is not BreakerState.OPEN
        assert all(c.reason for c in decision.rejected)

    @given(inputs())
    def test_pin_wins_when_eligible_and_available(self, kwargs: dict[str, object]) -> None:
        decision = decide(**kwargs)  # type: ignore[arg-type]
        rules: RoutingRules = kwargs["rules"]  # type: ignore[assignment]
        if rules.pin is not None and any(c.provider is rules.pin for c in decision.ranked):
            assert decision.ranked[0].provider is rules.pin
            assert decision.rule == "pin"

    @given(inputs())
    def test_unpinned_unsplit_ranking_is_by_score_then_name(
        self, kwargs: dict[str, object]
    ) -> None:
        decision = decide(**kwargs)  # type: ignore[arg-type]
        keys = [(-c.score, c.provider.value) for c in decision.ranked]
        if decision.rule is None:
            assert keys == sorted(keys)
        else:
            assert keys[1:] == sorted(keys[1:])

    @given(inputs(), providers, st.integers(0, 50))
    def test_more_errors_never_raise_availability(
        self, kwargs: dict[str, object], provider: CardProvider, more: int
    ) -> None:
        health: dict[CardProvider, Health] = dict(kwargs["health"])  # type: ignore[call-overload]
        base = health.get(provider, healthy())
        worse = Health(base.breaker, base.recent_calls + more, base.recent_errors + more, None)
        better = Health(base.breaker, base.recent_calls + more, base.recent_errors, None)
        values = []
        for h in (better, worse):
            decision = decide(**{**kwargs, "health": {**health, provider: h}})  # type: ignore[arg-type]
            values.append(
                next(
                    (
                        component(c, "availability")
                        for c in decision.ranked
                        if c.provider is provider
                    ),
                    None,
                )
            )
        if values[0] is not None and values[1] is not None:
            assert values[1] <= values[0]

    @given(
        inputs(), providers, st.decimals(min_value=0, max_value=5, places=2), st.integers(0, 200)
    )
    def test_a_higher_fee_never_raises_the_cost_value(
        self, kwargs: dict[str, object], provider: CardProvider, extra_pct: Decimal, extra: int
    ) -> None:
        fees: dict[CardProvider, FeeSchedule] = dict(kwargs["fees"])  # type: ignore[call-overload]
        base = fees.get(provider, FeeSchedule(Decimal("1"), {}))
        dearer = FeeSchedule(base.percent + extra_pct, {"AUD": base.fixed.get("AUD", 0) + extra})
        values = []
        for schedule in (base, dearer):
            decision = decide(**{**kwargs, "fees": {**fees, provider: schedule}})  # type: ignore[arg-type]
            values.append(
                next(
                    (component(c, "cost") for c in decision.ranked if c.provider is provider), None
                )
            )
        if values[0] is not None and values[1] is not None:
            assert values[1] <= values[0]

    def test_split_shares_converge_over_many_sessions(self) -> None:
        rules = RoutingRules(split={STRIPE: 70, ADYEN: 20, PAYPAL: 10})
        n = 4000
        picks = Counter(
            ranked(decide(rules=rules, session_id=str(uuid.UUID(int=i * 7919 + 1))))[0]
            for i in range(n)
        )
        for provider, share in rules.split.items():  # type: ignore[union-attr]
            assert abs(picks[provider] / n - share / 100) < 0.03, picks
