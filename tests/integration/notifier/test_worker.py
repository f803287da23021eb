"""The delivery queue under concurrency: replicas never send one delivery twice, a dead
worker's claims come back after the lease, and a stale outcome never overwrites a newer one."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import webhook_deliveries
from pago.common.enums import DeliveryStatus
from pago.notifier import repository
from pago.notifier.clients import SingleClient
from pago.notifier.guard import EgressPolicy, GuardedBackend, GuardedTransport
from pago.notifier.repository import Claimed, NewDelivery, Outcome, Verdict
from pago.notifier.schedule import RetryPolicy
from pago.notifier.sender import Sender
from pago.notifier.worker import DeliveryWorker
from tests.support.notifier import deliveries, seed_endpoint, seed_merchant, settle
from tests.support.receiver import Receiver


async def queue(engine: AsyncEngine, endpoint_id: str, count: int) -> None:
    rows = [
        NewDelivery(endpoint_id, f"evt_{secrets.token_hex(8)}", "session.completed", b'{"id":1}')
        for _ in range(count)
    ]
    async with engine.begin() as conn:
        assert await repository.insert_deliveries(conn, rows) == count
        assert await repository.insert_deliveries(conn, rows) == 0  # the unique constraint


async def claim(engine: AsyncEngine, *, lease: float) -> list[Claimed]:
    async with engine.begin() as conn:
        return await repository.claim_due(
            conn, slots=5, per_endpoint={}, endpoint_limit=5, lease=lease
        )


def worker(engine: AsyncEngine, client: httpx.AsyncClient) -> DeliveryWorker:
    sender = Sender(SingleClient(client), RetryPolicy(unit=0.01, jitter=0.0), timeout=2)
    return DeliveryWorker(
        engine, sender, concurrency=8, endpoint_concurrency=3, lease=5, poll_interval=0.02
    )


async def test_two_replicas_share_the_queue_without_sending_anything_twice(
    db: AsyncEngine, hooks: Receiver
) -> None:
    merchant = await seed_merchant(db)
    endpoints = [
        (await seed_endpoint(db, merchant, hooks.url(f"/replica/{i}")))[0] for i in range(4)
    ]
    for endpoint_id in endpoints:
        await queue(db, endpoint_id, 50)
    transport = GuardedTransport(
        GuardedBackend(EgressPolicy(allow_loopback=True)), limits=httpx.Limits()
    )
    async with httpx.AsyncClient(transport=transport) as client:
        replicas = [worker(db, client), worker(db, client)]
        runs = [asyncio.create_task(r.run(drain_timeout=5)) for r in replicas]
        await hooks.wait_for(lambda r: len(r.requests) >= 200, timeout=30)
        # Nothing is left to send twice once every delivery is recorded as done.
        for endpoint_id in endpoints:
            await settle(db, endpoint_id, 50)
        for replica in replicas:
            replica.stop()
        await asyncio.gather(*runs)
    sent = Counter((r.path, r.headers["webhook-id"]) for r in hooks.requests)
    assert len(sent) == 200
    assert set(sent.values()) == {1}
    for endpoint_id in endpoints:
        rows = await deliveries(db, endpoint_id)
        assert {(r["status"], r["attempts"]) for r in rows} == {(DeliveryStatus.SUCCEEDED, 1)}


async def test_a_dead_workers_claims_come_back_after_the_lease(db: AsyncEngine) -> None:
    merchant = await seed_merchant(db)
    endpoint_id, _ = await seed_endpoint(db, merchant, "https://shop.example/hook")
    await queue(db, endpoint_id, 1)
    [first] = await claim(db, lease=0.3)
    assert await claim(db, lease=0.3) == []
    await asyncio.sleep(0.4)  # the claimant died; its lease runs out
    [again] = await claim(db, lease=0.3)
    assert again.id == first.id
    assert (first.attempt, again.attempt) == (1, 2)
    async with db.begin() as conn:  # the dead worker's late outcome is not written
        stale = Outcome(first.id, endpoint_id, first.attempt, Verdict.SUCCEEDED, 200, None)
        assert await repository.record_outcomes(conn, [stale]) == 0
        fresh = Outcome(again.id, endpoint_id, again.attempt, Verdict.RETRY, 500, "HTTP 500", 60)
        assert await repository.record_outcomes(conn, [fresh]) == 1
    [row] = await deliveries(db, endpoint_id)
    assert row["status"] == DeliveryStatus.PENDING
    assert row["last_status_code"] == 500


async def test_a_manual_redelivery_voids_the_attempt_in_flight(db: AsyncEngine) -> None:
    merchant = await seed_merchant(db)
    endpoint_id, _ = await seed_endpoint(db, merchant, "https://shop.example/hook")
    await queue(db, endpoint_id, 1)
    [claimed] = await claim(db, lease=30)
    async with db.begin() as conn:  # what the api's redeliver does
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == claimed.id)
            .values(attempts=0, status="pending")
        )
        failed = Outcome(claimed.id, endpoint_id, 1, Verdict.FAILED, 500, "HTTP 500")
        assert await repository.record_outcomes(conn, [failed]) == 0
    [row] = await deliveries(db, endpoint_id)
    assert (row["status"], row["attempts"]) == (DeliveryStatus.PENDING, 0)
