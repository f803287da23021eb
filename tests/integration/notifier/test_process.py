"""``pago-notifier`` as a real process: every event reaches every endpoint exactly once across a
graceful restart, and SIGTERM lets the requests in flight finish before the process exits 0."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.enums import DeliveryStatus, SessionStatus
from pago.common.events import SessionUpdated
from pago.common.topics import CHECKOUT_SESSIONS
from tests.support.kafka import caught_up
from tests.support.notifier import (
    ALL_EVENTS,
    deliveries,
    mixed_events,
    publish,
    seed_endpoint,
    seed_merchant,
    settle,
    updated,
)
from tests.support.processes import ServiceProcess, module, run_to_exit
from tests.support.receiver import Receiver, Reply, verify

pytestmark = pytest.mark.slow


class NotifierProcess(ServiceProcess):
    """One ``python -m pago.notifier`` with exactly ``env``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__("pago-notifier", module("pago.notifier"), env)

    async def started(self, timeout: float = 30.0) -> int:
        """Wait for the start line and readiness; return the health port."""
        port = int((await self.wait_log_async("notifier started", timeout))["http_port"])
        await self.wait_healthy(f"http://127.0.0.1:{port}", path="/readyz", timeout=timeout)
        return port


@pytest.fixture
def notifier_env(server_env: dict[str, str]) -> dict[str, str]:
    return {
        **server_env,
        "PAGO_NOTIFIER_GROUP_ID": f"notifier-process-{uuid.uuid4().hex[:8]}",
        "PAGO_NOTIFIER_HTTP_PORT": "0",
        "PAGO_NOTIFIER_BATCH_WAIT_MS": "20",
        "PAGO_NOTIFIER_FETCH_WAIT_MS": "50",
        "PAGO_NOTIFIER_POLL_INTERVAL": "0.05",
        "PAGO_NOTIFIER_RETRY_UNIT_SECONDS": "0.01",
        "PAGO_NOTIFIER_SHUTDOWN_TIMEOUT": "10",
        "PAGO_WEBHOOK_ALLOW_LOOPBACK": "true",
        "PAGO_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def processes() -> Iterator[list[NotifierProcess]]:
    started: list[NotifierProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.close()


async def test_every_event_reaches_every_endpoint_once_across_a_restart(
    db: AsyncEngine,
    hooks: Receiver,
    producer: AIOKafkaProducer,
    notifier_env: dict[str, str],
    processes: list[NotifierProcess],
) -> None:
    merchant = await seed_merchant(db)
    a_id, a_secret = await seed_endpoint(db, merchant, hooks.url("/a"))
    b_id, b_secret = await seed_endpoint(db, merchant, hooks.url("/b"), events=ALL_EVENTS)
    secrets = {"/a": a_secret, "/b": b_secret}

    first = NotifierProcess(notifier_env)
    processes.append(first)
    await first.started()
    before = [e for _ in range(3) for e in mixed_events(merchant)]  # 9 to /a, 15 to /b
    await publish(producer, before)
    await hooks.wait_for(lambda r: len(r.at("/a")) == 9 and len(r.at("/b")) == 15)

    # A request in flight when SIGTERM arrives finishes and is recorded before the exit.
    hooks.script("/a", Reply(delay=1.5))
    in_flight = updated(merchant, SessionStatus.PAID)
    await publish(producer, [in_flight])
    await hooks.wait_for(lambda r: any(x.event["id"] == in_flight.event_id for x in r.at("/a")))
    assert await first.terminate_async() == 0
    assert any(e.get("msg") == "notifier stopped" for e in first.logs)
    a_rows = {r["event_id"]: r for r in await deliveries(db, a_id)}
    assert a_rows[in_flight.event_id]["status"] == DeliveryStatus.SUCCEEDED

    after = [e for _ in range(2) for e in mixed_events(merchant)]
    await publish(producer, after)  # while no notifier runs
    second = NotifierProcess(notifier_env)
    processes.append(second)
    await second.started()
    await hooks.wait_for(lambda r: len(r.at("/a")) == 9 + 1 + 6 and len(r.at("/b")) == 15 + 1 + 10)
    # No duplicate can come after this: every record is fanned out (the group's offsets are at
    # the end of the topic) and no delivery is left to send.
    group = notifier_env["PAGO_NOTIFIER_GROUP_ID"]
    await caught_up(notifier_env["KAFKA_BOOTSTRAP_SERVERS"], group, CHECKOUT_SESSIONS)
    await settle(db, a_id, 16)
    await settle(db, b_id, 26)
    assert await second.terminate_async() == 0

    for path in ("/a", "/b"):
        ids = Counter(verify(r, secrets[path])["id"] for r in hooks.at(path))
        assert all(n == 1 for n in ids.values()), ids.most_common(3)
    expected_b = {e.event_id for e in [*before, in_flight, *after] if e.type != "session.created"}
    expected_b -= {  # an Underpaid → Underpaid update is no webhook
        e.event_id
        for e in [*before, *after]
        if isinstance(e, SessionUpdated) and e.previous_status is SessionStatus.UNDERPAID
    }
    assert {r.event["id"] for r in hooks.at("/b")} == expected_b
    rows = [*await deliveries(db, a_id), *await deliveries(db, b_id)]
    assert {r["status"] for r in rows} == {DeliveryStatus.SUCCEEDED}
    assert all(r["attempts"] == 1 for r in rows)


def test_an_unreachable_broker_at_start_stops_it_with_one_line(
    server_env: dict[str, str],
) -> None:
    env = {**server_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PAGO_NOTIFIER_HTTP_PORT": "0"}

    done = run_to_exit(module("pago.notifier"), env)

    assert done.returncode == 2
    assert done.stderr.startswith("pago-notifier: stopped by KafkaConnectionError")
    assert done.stderr.count("\n") == 1
