"""``python -m pago.matcher`` as a process: settings errors, probes, metrics, graceful stop."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.matcher.process import MatcherProcess
from tests.support.matcher import USDT, eventually, new_session, publish, session_row, transfer
from tests.support.processes import module, run_to_exit


def test_a_missing_setting_stops_it_with_one_line() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "PAGO_DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env.update(REDIS_URL="redis://localhost:1", KAFKA_BOOTSTRAP_SERVERS="localhost:1")

    done = run_to_exit(module("pago.matcher"), env, timeout=30)

    assert done.returncode == 2
    assert done.stderr == "pago-matcher: missing required setting DATABASE_URL\n"


@pytest.mark.slow
async def test_it_serves_probes_and_stops_gracefully_on_sigterm(
    db: AsyncEngine, server_env: dict[str, str], producer: AIOKafkaProducer, run_id: str
) -> None:
    matcher = MatcherProcess(server_env, group_id=f"pago-matcher-test-{run_id}")
    try:
        port = await asyncio.to_thread(matcher.started)
        assert (await asyncio.to_thread(matcher.get, port, "/health/live")).status_code == 200
        session = await new_session(db)

        await publish(producer, transfer(session, 10 * USDT))

        await eventually(
            lambda: session_row(db, session.id), lambda r: r["status"] == "Paid", timeout=20
        )
        ready = await asyncio.to_thread(matcher.get, port, "/health/ready")
        assert ready.status_code == 200
        metrics = (await asyncio.to_thread(matcher.get, port, "/metrics")).text
        assert 'pago_matcher_transfers_total{result="applied",stage="confirmed"}' in metrics

        assert await asyncio.to_thread(matcher.terminate) == 0
        assert any(entry.get("msg") == "matcher stopped" for entry in matcher.logs)
    finally:
        matcher.close()
