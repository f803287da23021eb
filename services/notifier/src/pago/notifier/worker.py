"""The delivery worker: claim due deliveries, send them concurrently, record the outcomes.

Bounded twice: at most ``concurrency`` requests in flight in the process, and at most
``endpoint_concurrency`` of them to any one endpoint, so an endpoint that takes the full 10 s
to time out occupies a few slots while every other endpoint keeps its pace. Outcomes are
written in batches by one recorder task (one statement for however many finished meanwhile).

Delivery is at-least-once: a process that dies after the receiver's 2xx but before the outcome
is written sends that delivery again once its lease lapses. Receivers deduplicate on the event
``id`` (also ``webhook-id``), which every attempt of a delivery repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally

from sqlalchemy.ext.asyncio import AsyncEngine

from pago.notifier import metrics, repository
from pago.notifier.repository import Claimed, Outcome
from pago.notifier.sender import Sender

log = logging.getLogger(__name__)

ERROR_BACKOFF = (0.5, 5.0)
"""First and largest pause (seconds) after a failed claim or record transaction."""


class DeliveryWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        sender: Sender,
        *,
        concurrency: int,
        endpoint_concurrency: int,
        lease: float,
        poll_interval: float,
    ) -> None:
        self._engine = engine
        self._sender = sender
        self._concurrency = concurrency
        self._endpoint_concurrency = endpoint_concurrency
        self._lease = lease
        self._poll_interval = poll_interval
        self._in_flight: dict[asyncio.Task[None], Claimed] = {}
        self._per_endpoint: Tally[str] = Tally()
        self._signal = asyncio.Event()
        self._stopping = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._closing = False

    def wake(self) -> None:
        """New deliveries were committed: look for due work now rather than at the next poll."""
        self._signal.set()

    def stop(self) -> None:
        """Claim nothing more; ``run`` returns once the requests in flight are recorded."""
        self._stopping.set()
        self._signal.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, *, drain_timeout: float) -> None:
        recorder = asyncio.create_task(self._record_loop(), name="pago-notifier-recorder")
        try:
            await self._claim_loop()
            if self._in_flight:
                log.info("finishing webhook requests in flight", extra={"count": self.in_flight})
                _, pending = await asyncio.wait(list(self._in_flight), timeout=drain_timeout)
                for task in pending:
                    # Its delivery stays claimed until the lease lapses, then is sent again.
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._closing = True
            self._outcome_ready.set()
            try:
                await asyncio.wait_for(recorder, timeout=drain_timeout)
            except TimeoutError:
                # Those deliveries are re-sent after their lease: duplicates, never losses.
                log.error(
                    "could not record the last webhook outcomes",
                    extra={"count": len(self._outcomes)},
                )

    async def run_once(self) -> int:
        """Claim what is due, send it and record it; for tests and tools. Returns the count."""
        claimed = await self._claim(self._concurrency)
        outcomes = await asyncio.gather(*(self._sender.attempt(c) for c in claimed))
        if outcomes:
            async with self._engine.begin() as conn:
                await repository.record_outcomes(conn, outcomes)
        return len(claimed)

    # -- claiming ------------------------------------------------------------------------

    async def _claim(self, slots: int) -> list[Claimed]:
        async with self._engine.begin() as conn:
            return await repository.claim_due(
                conn,
                slots=slots,
                per_endpoint=dict(self._per_endpoint),
                endpoint_limit=self._endpoint_concurrency,
                lease=self._lease,
            )

    async def _claim_loop(self) -> None:
        backoff = ERROR_BACKOFF[0]
        while not self._stopping.is_set():
            self._signal.clear()
            free = self._concurrency - len(self._in_flight)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    backoff = ERROR_BACKOFF[0]
                except Exception:
                    metrics.WORKER_ERRORS.inc()
                    log.exception("claiming due deliveries failed", extra={"retry_in_s": backoff})
                    await self._pause(backoff)
                    backoff = min(backoff * 2, ERROR_BACKOFF[1])
                    continue
                for delivery in claimed:
                    self._start(delivery)
            if claimed and len(claimed) < free:
                continue  # more may be due behind an endpoint that just reached its limit
            await self._pause(self._poll_interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout=seconds)

    def _start(self, delivery: Claimed) -> None:
        task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
        self._in_flight[task] = delivery
        self._per_endpoint[delivery.endpoint_id] += 1
        metrics.IN_FLIGHT.set(len(self._in_flight))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._in_flight.pop(task)
        self._per_endpoint[delivery.endpoint_id] -= 1
        if self._per_endpoint[delivery.endpoint_id] <= 0:
            del self._per_endpoint[delivery.endpoint_id]
        metrics.IN_FLIGHT.set(len(self._in_flight))
        self._signal.set()  # a slot is free

    async def _deliver(self, delivery: Claimed) -> None:
        try:
            outcome = await self._sender.attempt(delivery)
        except Exception:
            # A bug, not the receiver's fault: leave the claim to lapse and be tried again.
            log.exception("webhook attempt crashed", extra={"delivery_id": delivery.id})
            return
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    # -- recording -----------------------------------------------------------------------

    async def _record_loop(self) -> None:
        """Write outcomes as they come; returns once closing and nothing is left."""
        backoff = ERROR_BACKOFF[0]
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                try:
                    await self._write(batch)
                    backoff = ERROR_BACKOFF[0]
                except Exception:
                    metrics.WORKER_ERRORS.inc()
                    log.exception("recording webhook outcomes failed", extra={"count": len(batch)})
                    self._outcomes[:0] = batch
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, ERROR_BACKOFF[1])
                    self._outcome_ready.set()
                    continue
            if self._closing and not self._outcomes:
                return

    async def _write(self, batch: list[Outcome]) -> None:
        async with self._engine.begin() as conn:
            written = await repository.record_outcomes(conn, batch)
        if written < len(batch):
            metrics.STALE_OUTCOMES.inc(len(batch) - written)

    async def sample_backlog(self) -> None:
        async with self._engine.connect() as conn:
            metrics.DUE_BACKLOG.set(await repository.due_backlog(conn))
