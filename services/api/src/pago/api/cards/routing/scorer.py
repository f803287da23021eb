"""The routing scorer: pure, explainable, deterministic.

``score`` takes the order, the configured providers' capabilities and what the service read
(route statistics, circuit-breaker health, fee schedules, the merchant's rules) and returns a
``Decision``: the candidates that can take the order, best first, and those that cannot, each
with its components and a sentence per component. No I/O and no clock: the same inputs give
the same decision, so a persisted decision can be re-derived and unit-tested in microseconds.

The score (0–100, one decimal) is ``100 × Σ weight × value`` over four components, each value
0–1 and shown rounded to four places; the score is computed from the *shown* values and
rounded half-up to one decimal (``ROUND_HALF_UP``: 92.45 → 92.5, what a reader of the
explanation expects), so anyone can redo the sum from the explanation.

- **eligibility** (a gate, weight 0): the currency, the billing country and the total within
  the provider's per-currency minimum and maximum. An ineligible candidate is rejected with
  the reason.
- **conversion**: completed ÷ resolved sessions (resolved = completed + failed; an expired
  session counts as failed, see ``stats_repository``) for this provider, currency and
  country, smoothed toward the pooled rate of all candidates (a beta prior)::

      pooled = (Σ completed + K × ½) / (Σ resolved + K)
      value  = (completed + K × pooled) / (resolved + K)          K = CONVERSION_PRIOR

  A provider with no history scores the pooled rate, never 0 or 1; K = 20 means twenty
  resolved sessions weigh as much as the prior.
- **availability**: the success ratio of recent create calls with a prior of
  ``AVAILABILITY_PRIOR_OK`` successes in ``AVAILABILITY_PRIOR_CALLS`` calls (19 in 20, i.e.
  95 % for a provider nobody called yet): ``(ok + 19) / (calls + 20)``. A half-open breaker
  multiplies it by ``HALF_OPEN_FACTOR`` (½); an open breaker rejects the candidate.
- **cost**: the provider's fee for this order (``percent`` of the total, rounded half-up to a
  minor unit, plus the fixed fee in this currency), normalised across the candidates as
  ``cheapest fee ÷ this fee`` (1 for the cheapest; a fee of 0 is 1). Without a schedule the
  value is neutral (½).
- **latency**: the median create latency normalised the same way, ``fastest ÷ this``
  (milliseconds, at least 1); neutral (½) before the provider's first call.

Merchant rules, applied after scoring: ``exclude`` rejects (it wins over ``pin``); ``pin`` puts
the pinned provider first when it is eligible and its breaker not open; ``split`` picks the
first provider by a stable hash of the session id among the eligible providers with a share
(shares renormalised over those), the others following by score as the failover order.
Ranking is by score, descending, ties broken by provider name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from pago.api.cards.providers.base import Capabilities, CardOrder
from pago.api.cards.routing.model import (
    BreakerState,
    CandidateScore,
    Component,
    Decision,
    FeeSchedule,
    Health,
    RouteStats,
    RoutingRules,
    Weights,
)
from pago.common.enums import CardProvider

CONVERSION_PRIOR = Decimal(20)
"""Resolved sessions the prior weighs as (the ``K`` of the module docstring)."""
CONVERSION_BASE = Decimal("0.5")
"""The pooled rate's own prior, when no candidate has history."""
AVAILABILITY_PRIOR_OK = 19
AVAILABILITY_PRIOR_CALLS = 20
HALF_OPEN_FACTOR = Decimal("0.5")
NEUTRAL = Decimal("0.5")

_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_VALUE_PLACES = Decimal("0.0001")
_SCORE_PLACES = Decimal("0.1")
_UNIT = Decimal(1)


def score(
    order: CardOrder,
    candidates: Mapping[CardProvider, Capabilities],
    *,
    stats: Mapping[CardProvider, RouteStats],
    health: Mapping[CardProvider, Health],
    fees: Mapping[CardProvider, FeeSchedule],
    rules: RoutingRules,
    weights: Weights,
    session_id: str,
) -> Decision:
    """Rank ``candidates`` (the configured providers) for ``order``; see the module docstring.

    Missing ``stats`` or ``health`` for a provider mean no history (the priors apply); a
    missing fee schedule makes the cost neutral.
    """
    country = order.billing_address.country.upper()
    currency = order.currency.upper()
    rejected: list[CandidateScore] = []
    competing: list[tuple[CardProvider, Component]] = []
    for provider in sorted(candidates):
        gate = _eligibility(candidates[provider], currency, country, order.total)
        if gate.value != _ONE:
            rejected.append(_rejected(provider, eligible=False, parts=[gate], reason=gate.detail))
        elif provider in rules.exclude:
            rejected.append(
                _rejected(provider, eligible=True, parts=[gate], reason="excluded by merchant rule")
            )
        elif provider in health and health[provider].breaker is BreakerState.OPEN:
            reason = "circuit breaker open: recent create calls failed"
            rejected.append(_rejected(provider, eligible=True, parts=[gate], reason=reason))
        else:
            competing.append((provider, gate))

    providers = [p for p, _ in competing]
    pooled = _pooled_rate(stats, providers)
    order_fees = {p: _fee(fees[p], order.total, currency) for p in providers if p in fees}
    cheapest = min(order_fees.values(), default=None)
    latencies = {
        p: max(1, h.latency_ms_p50)
        for p in providers
        if (h := health.get(p)) is not None and h.latency_ms_p50 is not None
    }
    fastest = min(latencies.values(), default=None)

    scored: list[CandidateScore] = []
    for provider, gate in competing:
        parts = [
            gate,
            _conversion(stats.get(provider), pooled, currency, country, weights.conversion),
            _availability(health.get(provider), weights.availability),
            _cost(order_fees.get(provider), cheapest, currency, weights.cost),
            _latency(latencies.get(provider), fastest, weights.latency),
        ]
        total = sum((c.weight * c.value for c in parts), _ZERO) * _HUNDRED
        points = total.quantize(_SCORE_PLACES, rounding=ROUND_HALF_UP)
        scored.append(CandidateScore(provider, eligible=True, score=points, components=parts))
    scored.sort(key=lambda c: (-c.score, c.provider.value))

    rule: str | None = None
    first: CardProvider | None = None
    if rules.pin is not None and any(c.provider is rules.pin for c in scored):
        rule, first = "pin", rules.pin
    elif rules.split:
        first = _split_pick(rules.split, [c.provider for c in scored], session_id)
        rule = "split" if first is not None else None
    if first is not None:
        scored.sort(key=lambda c: c.provider is not first)  # stable: the rest keep their order
    return Decision(ranked=tuple(scored), rejected=tuple(rejected), rule=rule)


def _rejected(
    provider: CardProvider, *, eligible: bool, parts: list[Component], reason: str
) -> CandidateScore:
    return CandidateScore(provider, eligible, _ZERO.quantize(_SCORE_PLACES), parts, reason)


def _eligibility(caps: Capabilities, currency: str, country: str, total: int) -> Component:
    def gate(ok: bool, detail: str) -> Component:
        return Component("eligibility", _ONE if ok else _ZERO, _ZERO, detail)

    if currency not in caps.currencies:
        return gate(False, f"currency {currency} not supported")
    if caps.countries is not None and country not in caps.countries:
        return gate(False, f"billing country {country} not supported")
    low = caps.min_amount.get(currency)
    if low is not None and total < low:
        return gate(False, f"total {total} below the minimum {low} {currency} minor units")
    high = caps.max_amount.get(currency)
    if high is not None and total > high:
        return gate(False, f"total {total} above the maximum {high} {currency} minor units")
    return gate(True, f"takes {currency} from {country}, total {total} minor units within limits")


def _ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal:
    return (Decimal(numerator) / Decimal(denominator)).quantize(_VALUE_PLACES, ROUND_HALF_UP)


def _pooled_rate(
    stats: Mapping[CardProvider, RouteStats], providers: list[CardProvider]
) -> Decimal:
    completed = sum(stats[p].completed for p in providers if p in stats)
    resolved = sum(stats[p].completed + stats[p].failed for p in providers if p in stats)
    return (completed + CONVERSION_PRIOR * CONVERSION_BASE) / (resolved + CONVERSION_PRIOR)


def _conversion(
    route: RouteStats | None, pooled: Decimal, currency: str, country: str, weight: Decimal
) -> Component:
    completed = route.completed if route else 0
    resolved = completed + route.failed if route else 0
    value = _ratio(completed + CONVERSION_PRIOR * pooled, resolved + CONVERSION_PRIOR)
    detail = (
        f"{completed} of {resolved} resolved sessions completed for {currency}/{country}, "
        f"smoothed toward the pooled {_percent(pooled)} % with a prior of {CONVERSION_PRIOR}"
    )
    return Component("conversion", value, weight, detail)


def _availability(current: Health | None, weight: Decimal) -> Component:
    calls = current.recent_calls if current else 0
    errors = min(calls, current.recent_errors) if current else 0
    ok = calls - errors
    value = _ratio(ok + AVAILABILITY_PRIOR_OK, calls + AVAILABILITY_PRIOR_CALLS)
    detail = f"{errors} errors in {calls} recent create calls"
    if current is not None and current.breaker is BreakerState.HALF_OPEN:
        value = (value * HALF_OPEN_FACTOR).quantize(_VALUE_PLACES, ROUND_HALF_UP)
        detail += f"; circuit breaker half-open (×{HALF_OPEN_FACTOR})"
    return Component("availability", value, weight, detail)


def _fee(schedule: FeeSchedule, total: int, currency: str) -> int:
    """The fee in minor units: the percentage rounded half-up to a unit, plus the fixed fee."""
    variable = (Decimal(total) * schedule.percent / _HUNDRED).quantize(_UNIT, ROUND_HALF_UP)
    return int(variable) + schedule.fixed.get(currency, 0)


def _cost(fee: int | None, cheapest: int | None, currency: str, weight: Decimal) -> Component:
    if fee is None or cheapest is None:
        return Component("cost", NEUTRAL, weight, "no fee schedule configured: neutral")
    value = _ONE if fee == 0 else _ratio(cheapest, fee)
    detail = f"fee {fee} {currency} minor units; the cheapest candidate's is {cheapest}"
    return Component("cost", value, weight, detail)


def _latency(p50: int | None, fastest: int | None, weight: Decimal) -> Component:
    if p50 is None or fastest is None:
        return Component("latency", NEUTRAL, weight, "no recent create latency: neutral")
    detail = f"median create {p50} ms; the fastest candidate's is {fastest} ms"
    return Component("latency", _ratio(fastest, p50), weight, detail)


def _percent(rate: Decimal) -> Decimal:
    return (rate * _HUNDRED).quantize(_SCORE_PLACES, ROUND_HALF_UP)


def _split_pick(
    shares: Mapping[CardProvider, int], available: list[CardProvider], session_id: str
) -> CardProvider | None:
    """The provider for this session among ``available`` by its share: the session id's
    SHA-256 (first 8 bytes) modulo the shares' sum, walked over providers in name order."""
    weighted = sorted((p, shares[p]) for p in available if shares.get(p, 0) > 0)
    total = sum(share for _, share in weighted)
    if total == 0:
        return None
    point = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % total
    for provider, share in weighted:
        if point < share:
            return provider
        point -= share
    raise AssertionError("unreachable: point < total")
