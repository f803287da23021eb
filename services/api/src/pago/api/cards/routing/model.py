"""Routing's values: what the scorer reads and the explainable decision it returns.

The scorer is pure (no I/O): the service reads the statistics, the circuit-breaker states and
the merchant's rules, then asks ``score`` (``pago.api.cards.routing.scorer``) for a decision.
A decision is persisted with its components and shown in ``GET /api/v1/sessions/{id}``.

Scores are ``Decimal`` with one digit after the point (``92.5``), 0–100: never ``float``, so a
persisted decision reads back exactly as it was made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from pago.common.enums import CardProvider


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class RouteStats:
    """Recent outcomes of one provider for one (currency, country), learned from webhooks."""

    attempts: int
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Health:
    """One provider's recent availability (shared by every api replica through Redis)."""

    breaker: BreakerState
    recent_calls: int
    recent_errors: int
    """Timeouts, 5xx and 429 among ``recent_calls``."""
    latency_ms_p50: int | None
    """Median create latency over the recent window; ``None`` before the first call."""


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """What a provider charges, configured per provider (and optionally per currency)."""

    percent: Decimal
    """Of the total, e.g. ``Decimal("2.9")`` for 2.9 %."""
    fixed: Mapping[str, int]
    """Per currency, a fixed fee in minor units."""


@dataclass(frozen=True, slots=True)
class RoutingRules:
    """A merchant's say in routing."""

    pin: CardProvider | None = None
    """Always this provider when it is eligible and available (its score still explained)."""
    exclude: frozenset[CardProvider] = frozenset()
    split: Mapping[CardProvider, int] | None = None
    """Volume shares in percent summing to 100: the session id's stable hash picks the
    provider among the eligible ones by these weights."""


@dataclass(frozen=True, slots=True)
class Component:
    """One weighted part of a candidate's score."""

    name: str
    """``eligibility``, ``conversion``, ``availability``, ``cost``, ``latency``."""
    value: Decimal
    """0–1, how good the candidate is on this component."""
    weight: Decimal
    """Share of the score (the weights sum to 1)."""
    detail: str
    """A sentence a support agent can read (``"conversion 87/100 for AUD/AU"``)."""


@dataclass(frozen=True, slots=True)
class CandidateScore:
    provider: CardProvider
    eligible: bool
    score: Decimal
    """0–100, one decimal; 0 when not eligible."""
    components: Sequence[Component]
    reason: str | None = None
    """Why it was excluded or not eligible (``None`` when it competed)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The ranking (best first) and why: the orchestrator tries ``ranked`` in order."""

    ranked: Sequence[CandidateScore]
    """Eligible candidates, best first (ties broken by provider name, so the order is stable)."""
    rejected: Sequence[CandidateScore]
    """Candidates that could not take the order, with their reason."""
    rule: str | None
    """The merchant rule that shaped it (``pin``, ``split``), if any."""


@dataclass(frozen=True, slots=True)
class Weights:
    """Shares of the score per component; eligibility is a gate, not a weight.

    Each is ``0 ≤ w ≤ 1`` and together they sum to exactly 1, so a score is a weighted mean
    of the component values (each 0–1) times 100.
    """

    conversion: Decimal = Decimal("0.40")
    availability: Decimal = Decimal("0.25")
    cost: Decimal = Decimal("0.20")
    latency: Decimal = Decimal("0.15")

    def __post_init__(self) -> None:
        parts = (self.conversion, self.availability, self.cost, self.latency)
        if any(not (Decimal(0) <= w <= Decimal(1)) for w in parts):
            raise ValueError("routing weights must each be between 0 and 1")
        if sum(parts, Decimal(0)) != Decimal(1):
            raise ValueError(f"routing weights must sum to 1, not {sum(parts, Decimal(0))}")
