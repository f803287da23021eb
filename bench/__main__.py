"""``python -m bench [name ...]``: run the benchmarks, print and store their JSON results."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench import (
    card_scorer,
    card_sessions,
    kafka_mock,
    matcher_drain,
    notifier_fanout,
    outbox_relay,
    session_create,
    solana_watcher,
    tron_watcher,
    watcher,
)
from bench.harness import Bench, Servers, servers, write_results

BENCHES: dict[str, Bench] = {
    "outbox_relay": outbox_relay.run,
    "matcher_drain": matcher_drain.run,
    "watcher": watcher.run,
    "session_create": session_create.run,
    "notifier_fanout": notifier_fanout.run,
    "tron_watcher": tron_watcher.run,
    "solana_watcher": solana_watcher.run,
    "kafka_mock": kafka_mock.run,
    "card_scorer": card_scorer.run,
    "card_sessions": card_sessions.run,
}


async def _run_all(names: list[str], srv: Servers) -> dict[str, Any]:
    return {name: await BENCHES[name](srv) for name in names}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    with servers() as srv:
        results = asyncio.run(_run_all(names, srv))
    path = write_results(results)
    print(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
