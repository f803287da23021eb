"""The outbox relay: publish unsent rows to Kafka, then mark them sent in the same transaction.

Guarantees: at-least-once (a crash between the broker's ack and the commit republishes the
batch, never loses it); order per key (see ``repository._CLAIM``); safe with several replicas
(``FOR UPDATE SKIP LOCKED``). A failed batch rolls back and is retried after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

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
        idle_interval: float = 0.05,
        max_backoff: float = 5.0,
        retention_seconds: int = 86_400,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._max_backoff = max_backoff
        self._retention_seconds = retention_seconds
        self._stopping = asyncio.Event()

    async def publish_batch(self) -> int:
        """Publish one batch; return how many rows were sent (0 when nothing is pending)."""
        started = time.perf_counter()
        async with self._engine.begin() as conn:
            rows = await repository.claim_batch(conn, self._batch_size)
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

    async def drain(self) -> int:
        """Publish until nothing is pending; return the total sent."""
        total = 0
        while sent := await self.publish_batch():
            total += sent
        return total

    async def run(self) -> None:
        """Relay until ``stop()``; failures back off exponentially and never skip a row."""
        backoff = self._idle_interval
        last_purge = 0.0
        while not self._stopping.is_set():
            try:
                sent = await self.publish_batch()
                backoff = self._idle_interval
                if time.monotonic() - last_purge > 60:
                    last_purge = time.monotonic()
                    await self._housekeeping()
            except Exception:
                metrics.OUTBOX_ERRORS.inc()
                log.exception("outbox batch failed; retrying", extra={"backoff_s": backoff})
                sent = 0
                backoff = min(backoff * 2, self._max_backoff)
            if sent < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)

    async def _housekeeping(self) -> None:
        async with self._engine.begin() as conn:
            await repository.purge_sent(conn, self._retention_seconds)
            metrics.OUTBOX_BACKLOG.set(await repository.backlog(conn))

    def stop(self) -> None:
        self._stopping.set()
