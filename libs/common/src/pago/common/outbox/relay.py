"""The outbox relay: publish rows to Kafka, then delete them in the same transaction.

Guarantees: at-least-once (a crash between the broker's ack and the commit republishes the
batch, never loses it); order per key; safe with several replicas (per-shard advisory locks, see
``repository``). A failed batch rolls back and is retried after a backoff; nothing is skipped.

Inside one relay, ``workers`` loops each own a disjoint slice of the shards, so one worker's
database round trips overlap another's wait for broker acks without two of them ever holding
events of the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common import metrics
from pago.common.outbox import repository

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 1000,
        workers: int = 2,
        idle_interval: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._max_backoff = max_backoff
        self._stopping = asyncio.Event()
        # Each relay walks the shards in its own order so that replicas tend to spread out.
        shards = list(range(repository.SHARDS))
        random.Random().shuffle(shards)  # noqa: S311 - spreading load, not secrecy
        self._slices = [shards[i::workers] for i in range(workers)]

    async def publish_batch(self, shards: Sequence[int] | None = None) -> int:
        """Publish one batch from ``shards`` (default: all); return how many rows were sent."""
        started = time.perf_counter()
        async with self._engine.begin() as conn:
            held = await repository.lock_shards(conn, shards or range(repository.SHARDS))
            if not held:
                return 0
            rows = await repository.claim_batch(conn, held, self._batch_size)
            if not rows:
                return 0
            acks = [
                await self._producer.send(
                    row.topic,
                    value=row.value,
                    key=row.key.encode(),
                    headers=[(k, v.encode()) for k, v in row.headers.items()],
                )
                for row in rows
            ]
            await asyncio.gather(*acks)
            await repository.mark_sent(conn, [row.id for row in rows])
        metrics.OUTBOX_BATCH_SECONDS.observe(time.perf_counter() - started)
        for row in rows:
            metrics.OUTBOX_PUBLISHED.labels(row.topic).inc()
        return len(rows)

    async def _drain_slice(self, shards: Sequence[int]) -> int:
        total = 0
        while sent := await self.publish_batch(shards):
            total += sent
        return total

    async def drain(self) -> int:
        """Publish until nothing is pending; return the total sent."""
        return sum(await asyncio.gather(*(self._drain_slice(s) for s in self._slices)))

    async def run(self) -> None:
        """Relay until ``stop()``."""
        sampler = asyncio.create_task(self._sample_backlog())
        try:
            await asyncio.gather(*(self._run_slice(s) for s in self._slices))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    async def _run_slice(self, shards: Sequence[int]) -> None:
        backoff = self._idle_interval
        while not self._stopping.is_set():
            try:
                sent = await self.publish_batch(shards)
                backoff = self._idle_interval
            except Exception:
                metrics.OUTBOX_ERRORS.inc()
                log.exception("outbox batch failed; retrying", extra={"backoff_s": backoff})
                sent = 0
                backoff = min(backoff * 2, self._max_backoff)
            if sent < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)

    async def _sample_backlog(self) -> None:
        while True:
            try:
                async with self._engine.connect() as conn:
                    metrics.OUTBOX_BACKLOG.set(await repository.backlog(conn))
            except Exception:
                log.warning("could not sample the outbox backlog", exc_info=True)
            await asyncio.sleep(15)

    def stop(self) -> None:
        """Finish the batches in flight, then return from ``run()``."""
        self._stopping.set()
