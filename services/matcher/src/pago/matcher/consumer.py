"""The ``chain.transfers`` consumer: at-least-once, acknowledged only after Postgres commits.

The loop — parse, apply in one transaction, dead letters acknowledged, then commit exactly the
batch's offsets; on an error roll back, rewind what it still owns and back off, or halt when it
cannot — is the shared ``pago.common.consumer.BatchConsumer`` (its docstring says why it keeps
the offsets itself rather than FastStream's ack policies). What is the matcher's own:

1. it tops the poll up with records the consumer already holds (``_top_up``), so a backlog
   drains in big transactions;
2. a record is a ``TransferObserved`` or a ``ChainScanned`` marker (``records.decode``; an
   unknown ``event_type`` header, not JSON, invalid or a newer major version is a dead letter);
3. it screens the senders (AML) before the transaction, then applies transfers and markers
   together in it.

A crash between the database commit and the offset commit redelivers the batch, and the domain
turns every redelivered transfer into a no-op (unique ``(network, tx_hash, log_index)``), so
nothing is credited twice. A poison record (its handling keeps raising an error the record
itself causes) is found by applying the failed batch one record per transaction and is
dead-lettered alone; a transient error (Postgres or Kafka unreachable, a timeout) is never a
dead letter: the batch is rewound and retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common import consumer as shared
from pago.common.channels import MATCHER_TRANSFERS
from pago.common.consumer import (
    FIRST_BACKOFF,
    Applied,
    BatchConsumer,
    ConsumerMetrics,
    ConsumerPort,
    ServiceHandler,
    port_for,
)
from pago.common.deadletter import DeadLetterSink
from pago.common.events import SCHEMA_VERSION
from pago.matcher import metrics
from pago.matcher.aml.screener import Screener
from pago.matcher.records import ChainRecord, decode, split
from pago.matcher.service import BatchOutcome, TransferMatcher

METRICS = ConsumerMetrics(
    batch_failures=metrics.BATCH_FAILURES,
    commit_failures=metrics.COMMIT_FAILURES,
    batch_seconds=metrics.BATCH_SECONDS,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TransferBatchHandler(ServiceHandler[ChainRecord, BatchOutcome]):
    """The matcher's steps in the shared batch consumer."""

    def __init__(
        self,
        engine: AsyncEngine,
        screener: Screener,
        matcher: TransferMatcher,
        *,
        deadletters: DeadLetterSink,
        schema_version: int = SCHEMA_VERSION,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        batch_size: int = 1000,
        top_up_ms: int = 20,
        port: Callable[[object], ConsumerPort] = port_for,
        clock: Callable[[], datetime] = utc_now,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._screener = screener
        self._matcher = matcher
        self._schema_version = schema_version
        self._batch_size = batch_size
        self._top_up_ms = top_up_ms
        self._clock = clock
        self.consumer = BatchConsumer(
            parse=self._parse,
            apply=self._apply,
            done=self._done,
            gather=self._top_up,
            deadletters=deadletters,
            metrics=METRICS,
            max_backoff=max_backoff,
            first_backoff=first_backoff,
            port=port,
            on_halt=on_halt,
        )

    def _parse(self, record: ConsumerRecord[Any, Any]) -> ChainRecord:
        return decode(record, supported=self._schema_version)

    async def _apply(self, records: Sequence[ChainRecord]) -> BatchOutcome:
        transfers, markers = split(records)
        verdicts = await self._screener.screen_many(self._matcher.senders_to_screen(transfers))
        async with self._engine.begin() as conn:
            outcome = await self._matcher.apply(
                conn, transfers, verdicts, self._clock(), markers=markers
            )
        outcome.committed()
        return outcome

    async def _done(self, applied: Applied[ChainRecord, BatchOutcome]) -> None:
        for letter in applied.letters:
            metrics.INVALID_TRANSFERS.labels(letter.reason.value).inc()
        metrics.BATCH_RECORDS.observe(len(applied.records))

    async def _top_up(self, batch: list[ConsumerRecord[Any, Any]], port: ConsumerPort) -> None:
        """Fill ``batch`` (in place) up to ``batch_size`` with records the consumer holds.

        One poll returns what one fetch brought (a few dozen records per partition), and a
        transaction costs the same few round trips for 20 records as for 1,000: reading on
        while records are ready is what lets a backlog drain in big transactions. The loop is
        FastStream's, and it waits for this handler, so nothing else polls meanwhile. In place,
        so that if a fetch fails the consumer still knows every record it must rewind.
        """
        deadline = time.monotonic() + self._top_up_ms / 1000
        while len(batch) < self._batch_size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await port.fetch_more(self._batch_size - len(batch), remaining_ms)
            if not more:
                break
            batch.extend(more)


def build_broker(
    bootstrap_servers: str,
    handler: TransferBatchHandler,
    *,
    batch_size: int,
    batch_timeout_ms: int,
    graceful_timeout: float,
    fetch_wait_ms: int = 100,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    group_id: str | None = None,
) -> KafkaBroker:
    """The FastStream broker with the matcher's one subscriber."""
    return shared.build_broker(
        bootstrap_servers,
        handler.consumer,
        MATCHER_TRANSFERS,
        client_id="pago-matcher",
        batch_size=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        graceful_timeout=graceful_timeout,
        fetch_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        group_id=group_id,
    )
