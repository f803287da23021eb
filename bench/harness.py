"""Run benchmarks and write one JSON file of results to ``bench/results/``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pago.common.db.migrate import upgrade
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import PostgresServer
from pago.devstack.redis_server import RedisServer

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Servers:
    database_url: str
    redis_url: str
    kafka_bootstrap_servers: str


@contextmanager
def servers() -> Iterator[Servers]:
    """The same real servers the tests use: embedded unless the environment names real ones."""
    with tempfile.TemporaryDirectory(prefix="pago-bench-") as tmp:
        pg = PostgresServer.start(Path(tmp) / "pg")
        try:
            redis = RedisServer.start(Path(tmp) / "redis")
            try:
                kafka = KafkaServer.start()
                try:
                    db = pg.create_database("pago_bench", exist_ok=True)
                    upgrade(db.url)
                    yield Servers(db.url, redis.url, kafka.bootstrap_servers)
                finally:
                    kafka.close()
            finally:
                redis.close()
        finally:
            pg.close()


Bench = Callable[[Servers], Awaitable[dict[str, Any]]]


def write_results(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "benchmarks": results,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench-{stamp}.json"
    text = json.dumps(document, indent=2, sort_keys=True)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path
