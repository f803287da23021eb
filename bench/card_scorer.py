"""The routing scorer's decision time per request at 3 and 10 providers (µs, p50/p99), beside a
baseline in the same run: the same inputs ranked by a trivial ``max()`` of conversion counts.

The scorer is pure, so no server is involved; 10 providers are the three real ones plus seven
names cycled from them (the enum has three members) with distinct statistics — the work per
candidate is what is measured, not the names. Target: p99 < 1 ms at 10 providers.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.harness import Servers
from pago.api.cards.providers.base import Capabilities, CardOrder
from pago.api.cards.routing.model import (
    BreakerState,
    FeeSchedule,
    Health,
    RouteStats,
    RoutingRules,
    Weights,
)
from pago.api.cards.routing.scorer import score
from pago.common.enums import CardProvider
from tests.support.cardproviders import seed_order

ROUNDS = 5000
WARMUP = 200


class _Provider(str):
    """A provider name beyond the enum's three: the scorer only sorts, hashes and compares
    names, which a ``str`` with ``.value`` does like a ``CardProvider``."""

    @property
    def value(self) -> str:
        return str(self)


def _inputs(n: int) -> dict[str, Any]:
    names: list[Any] = list(CardProvider)[:n] + [_Provider(f"psp{i:02d}") for i in range(n - 3)]
    caps = Capabilities(frozenset({"AUD", "USD", "EUR"}), frozenset({"AU", "NZ"}), {"AUD": 50})
    return {
        "candidates": dict.fromkeys(names, caps),
        "stats": {p: RouteStats(200 + i, 150 + i * 3, 40 - i) for i, p in enumerate(names)},
        "health": {
            p: Health(BreakerState.CLOSED, 100, i % 4, 150 + 20 * i) for i, p in enumerate(names)
        },
        "fees": {
            p: FeeSchedule(Decimal("2.9") - Decimal(i) / 10, {"AUD": 30 - i})
            for i, p in enumerate(names)
        },
        "rules": RoutingRules(),
        "weights": Weights(),
    }


def _baseline(order: CardOrder, inputs: Mapping[str, Any], session_id: str) -> object:
    stats: Mapping[Any, RouteStats] = inputs["stats"]
    return max(inputs["candidates"], key=lambda p: (stats[p].completed, p))


def _scorer(order: CardOrder, inputs: Mapping[str, Any], session_id: str) -> object:
    return score(order, session_id=session_id, **inputs)


def _time_us(fn: Callable[[CardOrder, Mapping[str, Any], str], object], n: int) -> dict[str, float]:
    """Wall time and this thread's CPU time per decision: on a shared machine the wall p99
    includes the scheduler's preemptions, the CPU time only the decision's own work."""
    order, inputs = seed_order(expires_at=datetime(2024, 1, 15, 12, tzinfo=UTC)), _inputs(n)
    ids = [str(uuid.UUID(int=i)) for i in range(ROUNDS)]
    for i in range(WARMUP):
        fn(order, inputs, ids[i])
    wall, cpu = [], []
    for session_id in ids:
        began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
        fn(order, inputs, session_id)
        cpu.append((time.thread_time_ns() - began_cpu) / 1000)
        wall.append((time.perf_counter_ns() - began) / 1000)
    wall_cuts, cpu_cuts = statistics.quantiles(wall, n=100), statistics.quantiles(cpu, n=100)
    return {
        "p50_us": round(wall_cuts[49], 1),
        "p99_us": round(wall_cuts[98], 1),
        "cpu_p50_us": round(cpu_cuts[49], 1),
        "cpu_p99_us": round(cpu_cuts[98], 1),
    }


async def run(servers: Servers) -> dict[str, Any]:
    result: dict[str, Any] = {"rounds": ROUNDS}
    for n in (3, 10):
        result[f"providers_{n}"] = {
            "scorer": _time_us(_scorer, n),
            "baseline_max": _time_us(_baseline, n),
        }
    result["target_p99_us_at_10"] = 1000
    ten = result["providers_10"]["scorer"]
    result["meets_target_wall_p99"] = ten["p99_us"] < 1000
    result["meets_target_cpu_p99"] = ten["cpu_p99_us"] < 1000
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result
