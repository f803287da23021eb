"""The cursor: the last block whose transfers the broker acknowledged, all of them.

Stored in ``chain.cursors`` (compacted, key ``{network}:{mode}``) as ``CursorCommitted``. A
record is written only after every transfer up to its block was acked, so a restart that
resumes at ``block_number + 1`` skips nothing; transfers published after the last record are
published again (duplicates of the un-checkpointed tail only; consumers are idempotent).

Fencing: each record carries the writer's leadership term in a ``pago-fence`` header. A
replica that lost its lease while paused may still land one late write; readers take the
newest record of the *highest* term, so such a write can never move the cursor back.
A new term always writes with a fence above every fence already in the topic.

Coverage: a ``pago-covered`` header holds, per ``chain.watchlist`` partition, an offset below
which every watched address is known to be covered over all blocks ≤ the cursor (it was in the
watch set when those blocks were scanned, or it was looked up over them afterwards). A new
leader looks up exactly the addresses at or past these marks (they may have arrived after the
previous leader scanned their payment), so a restart adds no duplicates below the cursor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from pago.common.enums import Mode, Network
from pago.common.events import CursorCommitted
from pago.common.topics import CHAIN_CURSORS, cursor_key
from pago.watcher import metrics

log = logging.getLogger(__name__)

FENCE_HEADER = "pago-fence"
COVERED_HEADER = "pago-covered"


@dataclass(frozen=True, slots=True)
class Cursor:
    number: int
    """Every transfer in blocks ≤ ``number`` was published and acknowledged."""
    hash: str
    """Hash of block ``number`` ("" when unknown: a first start at block 0)."""
    time: datetime | None = field(default=None, compare=False)
    """Timestamp of block ``number`` when the range that ended there told it (progress
    markers need it); not stored in ``chain.cursors``."""


@dataclass(frozen=True, slots=True)
class StoredCursor:
    cursor: Cursor
    committed_at: datetime
    fence: int
    covered: dict[int, int] | None
    """Watchlist offsets per partition (see the module docstring); None if not recorded."""


@dataclass(frozen=True, slots=True)
class LoadedCursors:
    latest: StoredCursor | None
    """The newest record of the highest fence, or None on a first start."""
    max_fence: int
    """The highest fence in the topic (0 if none): a new term writes above it."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class CursorStore:
    def __init__(
        self,
        bootstrap_servers: str,
        producer: AIOKafkaProducer,
        network: Network,
        mode: Mode,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._producer = producer
        self._network = network
        self._mode = mode
        self._key = cursor_key(network.value, mode.value).encode()
        self._clock = clock
        self._commits = metrics.CURSOR_COMMITS.labels(network.value, mode.value)

    async def load(self) -> LoadedCursors:
        """Read ``chain.cursors`` from the start to its current end (compacted: small)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap.split(","),
            enable_auto_commit=False,
            client_id="pago-watcher-cursor",
        )
        await consumer.start()
        best: tuple[int, int, int, StoredCursor] | None = None
        max_fence = 0
        try:
            partitions = consumer.partitions_for_topic(CHAIN_CURSORS)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(CHAIN_CURSORS) or set()
            if not partitions:
                raise RuntimeError(f"topic {CHAIN_CURSORS} does not exist")
            tps = [TopicPartition(CHAIN_CURSORS, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        if record.key != self._key or record.value is None:
                            continue
                        try:
                            event = CursorCommitted.model_validate_json(record.value)
                        except ValidationError:
                            log.error("unreadable cursor record", extra={"offset": record.offset})
                            continue
                        fence = _fence(record.headers)
                        max_fence = max(max_fence, fence)
                        stored = StoredCursor(
                            Cursor(event.block_number, event.block_hash),
                            event.committed_at,
                            fence,
                            _covered(record.headers),
                        )
                        rank = (fence, tp.partition, record.offset)
                        if best is None or rank > best[:3]:
                            best = (*rank, stored)
        finally:
            await consumer.stop()
        return LoadedCursors(best[3] if best else None, max_fence)

    async def write(self, cursor: Cursor, fence: int, covered: Mapping[int, int]) -> None:
        """Write the cursor and wait for the ack (call only after the transfers were acked)."""
        event = CursorCommitted(
            network=self._network,
            mode=self._mode,
            block_number=cursor.number,
            block_hash=cursor.hash,
            committed_at=self._clock(),
        )
        await self._producer.send_and_wait(
            CHAIN_CURSORS,
            event.to_bytes(),
            key=self._key,
            headers=[
                (FENCE_HEADER, str(fence).encode()),
                (COVERED_HEADER, json.dumps({str(p): o for p, o in covered.items()}).encode()),
            ],
        )
        self._commits.inc()


def _fence(headers: Sequence[tuple[str, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == FENCE_HEADER:
            try:
                return int(value.decode())
            except ValueError:
                return 0
    return 0


def _covered(headers: Sequence[tuple[str, bytes]] | None) -> dict[int, int] | None:
    for name, value in headers or ():
        if name == COVERED_HEADER:
            try:
                return {int(p): int(o) for p, o in json.loads(value).items()}
            except (ValueError, TypeError, AttributeError):
                return None
    return None
