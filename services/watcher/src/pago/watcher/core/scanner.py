"""The leader's work for one term: follow the head, publish transfers, move the cursor.

Five loops share one ``Scanner`` (one event loop, so plain attributes; ``_lock`` serializes
every send against reorg handling):

- **head**: polls the best head across endpoints every ``poll_interval``.
- **confirm**: plans ranges from the cursor up to the confirmable tip (head − confirmations,
  or the finalized block), fetches up to ``concurrency`` of them at once (adaptive sizes:
  ``core.ranges``) and *sends them in order*, each range's first block checked to be the child
  of the previous range's last (the cursor is a hash chain). A range that fails is retried
  (other endpoint, backoff, split if too large) until it succeeds: never skipped.
- **commit**: awaits the broker's acks range by range, in order, and only then moves the cursor
  to the range's end; so the cursor only ever stands on a prefix of fully acknowledged ranges,
  while sending never waits for acks. A failed ack rewinds sending to the cursor (the ranges
  after it are sent again: duplicates, never gaps).
- **detect**: follows blocks near the head (``detect_depth``), keeps their hashes in the
  reorg ring, publishes ``detected``, and on a parent-hash mismatch rewinds to the fork point
  and publishes ``reverted`` for what vanished (``core.reorg``). Confirming a range also
  reverts any detection from it that the fresh query no longer returns (a safety net for a
  reorg the ring did not see).
- **backfill**: addresses that arrive after the scan passed blocks are looked up over those
  blocks from the block at their session's creation (``WatchAddress.created_at``, found by
  ``core.timeline``; at least the last ``backfill_blocks``, all there is without it), however
  late the api's outbox or Kafka delivered them; a new leader does the same for the addresses
  its predecessor's cursor does not vouch for.

The cursor record (``core.cursor``) is written at most every ``cursor_interval`` seconds and
once more on a graceful stop, always after the acks and only while the lease is valid.

- **progress**: each time the cursor moves, a ``ChainScanned`` round (one marker per
  ``chain.transfers`` partition) names the cursor's block and its time — at most one round per
  ``progress_interval`` seconds, and never later than that after the move — so the matcher can
  prove the chain silent for a session even when nothing is paid or watched. Written only
  while the lease is valid, and held back while late addresses wait for their back-fill (the
  cursor does not vouch for them yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pago.common.enums import TransferStage
from pago.watcher import metrics
from pago.watcher.core.cursor import Cursor, CursorStore, LoadedCursors
from pago.watcher.core.leadership import Lease
from pago.watcher.core.model import BlockRef, ChainHead, Scan, Transfer
from pago.watcher.core.publisher import TransferPublisher
from pago.watcher.core.ranges import RangeSizer
from pago.watcher.core.reorg import BlockRing, ForkDetected, Ledger
from pago.watcher.core.rpc import Backoff, EndpointBehind, RangeTooLarge, WrongChain
from pago.watcher.core.source import ChainSource, WatchView
from pago.watcher.core.stages import StagePolicy
from pago.watcher.core.throttle import Failures
from pago.watcher.core.timeline import block_at
from pago.watcher.core.watchlist import Late, WatchlistFollower

log = logging.getLogger(__name__)

T = TypeVar("T")

BLOCK_AT_CACHE = 10_000
"""Minutes whose block is remembered for back-fills (a week of minutes)."""
HEAD_LOG_EVERY = 30
"""The head and detect loops fail once per head poll (``poll_interval``, 1 s by default):
their first failure and then every 30th are logged, a line each half minute of an outage."""
RETRY_LOG_EVERY = 10
"""A range or step retried with backoff (0.25 s doubling to 15 s by default) logs its first
failure and then every 10th."""


@dataclass(frozen=True, slots=True)
class ScanOptions:
    initial_range: int = 500
    max_range: int = 2000
    concurrency: int = 4
    poll_interval: float = 1.0
    cursor_interval: float = 1.0
    """Least seconds between two cursor records (each costs one Kafka write)."""
    ring_size: int = 256
    """Recent blocks whose hashes are kept: the deepest reorg handled in full."""
    start_block: int | None = None
    """First block of a first start (no cursor yet); None: the confirmable tip."""
    backfill_blocks: int = 1000
    """Look-back of a late address whose ``WatchAddress`` carries no ``created_at``."""
    backfill_batch: int = 500
    backfill_margin: float = 120.0
    """Seconds before a session's ``created_at`` its back-fill starts (clock skew between the
    api and block producers; a block's timestamp may precede its inclusion)."""
    backfill_max_age: float = 7 * 86_400.0
    """A ``created_at`` older than this is taken as this old (bounds a back-fill's blocks)."""
    progress_interval: float = 5.0
    """Least seconds between two ``ChainScanned`` rounds; also the most a round waits."""
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=15.0))


class _Union(Collection[bytes]):
    """The watch set plus a few keys (addresses whose detections are being re-checked)."""

    def __init__(self, big: WatchView, extra: frozenset[bytes]) -> None:
        self._big = big
        self._extra = extra

    def __contains__(self, key: object) -> bool:
        return key in self._extra or key in self._big

    def __len__(self) -> int:
        return len(self._big) + len(self._extra)

    def __iter__(self) -> Iterator[bytes]:
        yield from self._extra
        yield from (k for k in self._big if k not in self._extra)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A range handed to the producer, waiting for its acks before the cursor may follow."""

    cursor: Cursor
    delivered: list[asyncio.Future[None]]
    positions: dict[int, int]
    generation: int


class _Inconsistent(Exception):
    """A range's answer disagrees with the reorg ring: fetch it again after the next head."""


class _PublishFailed(Exception):
    """The producer refused a range's records: send again from the acknowledged cursor."""


class _CursorOffChain(Exception):
    """A range does not continue the cursor's block: the chain changed at or below it."""


class Scanner:
    def __init__(
        self,
        source: ChainSource,
        watch: WatchlistFollower,
        publisher: TransferPublisher,
        cursors: CursorStore,
        lease: Lease,
        policy: StagePolicy,
        options: ScanOptions,
    ) -> None:
        self.source = source
        self.watch = watch
        self.publisher = publisher
        self.cursors = cursors
        self.lease = lease
        self.policy = policy
        self.options = options
        self.sizer = RangeSizer(options.initial_range, options.max_range)
        self.ring = BlockRing(options.ring_size)
        self.ledger = Ledger()
        self.head: ChainHead | None = None
        self.head_at = 0.0
        self.cursor: Cursor | None = None
        self.fence = 0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._wakeups: list[asyncio.Event] = []
        self._late: dict[bytes, Late] = {}
        """Addresses to look up over scanned blocks → where they came from, since when."""
        self._late_event = asyncio.Event()
        self._planned_to = -1
        self._scanned_with: dict[int, int] = {}
        """Watchlist positions when the newest confirmed range was fetched."""
        self._rewound = False
        self._sent: Cursor | None = None
        """End of the newest range handed to the producer (``cursor`` follows on its acks)."""
        self._generation = 0
        """Bumped by every rewind: acks of ranges sent before it no longer move the cursor."""
        self._inflight: deque[_InFlight] = deque()
        self._inflight_changed = asyncio.Event()
        self._sending_done = False
        self._written: Cursor | None = None
        self._written_at = 0.0
        self._cursor_moved = asyncio.Event()
        self._marked: Cursor | None = None
        """The cursor the newest ``ChainScanned`` round named."""
        self._marked_at = -float("inf")
        self._late_idle = asyncio.Event()
        self._late_idle.set()
        self._block_at_minute: dict[int, int] = {}
        """Unix minute → the newest block at or before it (back-fill starts)."""
        net, mode = source.network.value, source.mode.value
        self._m_head = metrics.HEAD.labels(net, mode)
        self._m_cursor = metrics.CURSOR.labels(net, mode)
        self._m_lag = metrics.LAG.labels(net, mode)
        self._m_confirm_lag = metrics.CONFIRM_LAG.labels(net, mode)
        self._m_blocks = {
            stage: metrics.BLOCKS_SCANNED.labels(net, mode, stage)
            for stage in ("confirmed", "detected")
        }
        self._m_range = metrics.RANGE_SIZE.labels(net)
        self._m_refusals = metrics.RANGE_REFUSALS.labels(net)
        self._m_retries = metrics.RANGE_RETRIES.labels(net)
        self._m_publish_failures = metrics.PUBLISH_FAILURES.labels(net, mode)
        self._m_reorgs = metrics.REORGS.labels(net, mode)
        self._m_reorg_depth = metrics.REORG_DEPTH.labels(net, mode)
        self._m_backfilled = metrics.BACKFILLED_ADDRESSES.labels(net, mode)
        self._m_progress = metrics.PROGRESS_BLOCK.labels(net, mode)
        self._m_backfill_from = metrics.BACKFILL_FROM.labels(net, mode)

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop: no new range starts; the publish in flight finishes; the cursor is
        written; ``run`` returns."""
        self._stop.set()
        self._inflight_changed.set()
        for event in self._wakeups:
            event.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def status(self) -> dict[str, object]:
        head, cursor = self.head, self.cursor
        confirmable = self.policy.confirmable(head) if head is not None else None
        return {
            "head": head.latest if head else None,
            "finalized": head.finalized if head else None,
            "cursor": cursor.number if cursor else None,
            "sent": self._sent.number if self._sent else None,
            "confirmable": confirmable,
            "lag_blocks": head.latest - cursor.number if head and cursor else None,
            "confirm_lag_blocks": (
                max(0, confirmable - cursor.number) if confirmable is not None and cursor else None
            ),
            "range_blocks": self.sizer.size,
            "pending_detections": len(self.ledger.detected),
            "late_addresses": len(self._late),
            "fence": self.fence,
        }

    # -- one term --------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan as the leader until ``request_stop`` (returns) or cancellation (lease lost:
        nothing more is written). An unexpected error propagates: the caller ends the term."""
        loaded = await self._retry("load cursor", self.cursors.load)
        # Above every fence in the topic: no record of an earlier term can outrank ours.
        self.fence = max(self.lease.fence, loaded.max_fence + 1)
        head = await self._retry("read head", self._read_head)
        self._set_head(head)
        self._scanned_with = dict(self.watch.positions)
        marks: dict[int, int] | None = None
        if loaded.latest is not None:
            # Whatever the previous leader's cursor does not vouch for may have been paid in
            # blocks it scanned before the address reached its watch set.
            marks = loaded.latest.covered or {}
        elif self.options.start_block is None:
            # A first start begins at head − confirmations: an address watched already may
            # have been paid just below that (a session created before this watcher's first
            # start). An explicit start block is the operator's choice of beginning.
            marks = {}
        if marks is not None:
            additions, complete = self.watch.additions_since(marks)
            if not complete:
                log.error(
                    "too many addresses since the last checkpoint to remember them all; "
                    "the oldest are not looked up over already scanned blocks"
                )
            for key, partition, offset, since in additions:
                self._late[key] = Late(partition, offset, since)
            if self._late:
                self._late_idle.clear()
            self._late_event.set()
        self.cursor = self._sent = await self._initial_cursor(loaded, head)
        self._planned_to = self.cursor.number
        self._set_cursor_metrics()
        self.watch.on_added = self._late_added
        loops = [self._confirm_loop(), self._commit_loop(), self._head_loop()]
        loops += [self._backfill_loop(), self._progress_loop()]
        if self.policy.detect_depth is not None:
            loops.append(self._detect_loop())
        tasks = [asyncio.create_task(c) for c in loops]
        confirm, commit = tasks[0], tasks[1]
        try:
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done:
                error = None if task is stop else task.exception()
                if error is not None:
                    raise error
            # Graceful: sending stops after the range in hand; every range sent is then acked
            # (or given up after retries) before the last cursor record.
            await confirm
            await commit
            await self._write_cursor(force=True)
            try:
                await self._mark_progress()
            except Exception as exc:
                log.warning("last progress markers failed", extra={"error": str(exc)[:300]})
        finally:
            self.watch.on_added = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _initial_cursor(self, loaded: LoadedCursors, head: ChainHead) -> Cursor:
        stored = loaded.latest
        if stored is not None:
            cursor = stored.cursor
            if cursor.hash and 0 <= cursor.number <= head.latest:
                refs = await self._retry(
                    "check cursor block", lambda: self.source.blocks(cursor.number, cursor.number)
                )
                if refs and refs[-1].hash != cursor.hash:
                    # The chain changed below the cursor while no one watched it (a reorg
                    # deeper than the confirmations): scan the ring's depth again.
                    back = max(-1, cursor.number - self.options.ring_size)
                    log.critical(
                        "cursor block is not on the chain any more; rewinding",
                        extra={"cursor": cursor.number, "rewind_to": back},
                    )
                    self._m_reorgs.inc()
                    cursor = await self._cursor_at(back)
            log.info(
                "resuming from the cursor",
                extra={"cursor": cursor.number, "fence": self.fence, "head": head.latest},
            )
            return cursor
        if self.options.start_block is not None:
            first = self.options.start_block
        else:
            first = max(0, self.policy.confirmable(head))
        cursor = await self._cursor_at(first - 1)
        log.info("first start", extra={"first_block": first, "head": head.latest})
        # Written at once: a crash before the first range must not restart at a newer head.
        await self._retry(
            "write first cursor",
            # Not vouching for the addresses still to be looked up (see ``_covered``).
            lambda: self.cursors.write(cursor, self.fence, self._covered()),
        )
        self._written, self._written_at = cursor, time.monotonic()
        return cursor

    async def _cursor_at(self, number: int) -> Cursor:
        if number < 0:
            return Cursor(number, "")
        refs = await self._retry("read block", lambda: self.source.blocks(number, number))
        return Cursor(number, refs[-1].hash if refs else "")

    # -- head ------------------------------------------------------------------------------

    async def _read_head(self) -> ChainHead:
        return await self.source.head(finalized=self.policy.use_finalized)

    def _set_head(self, head: ChainHead) -> None:
        self.head = head
        self.head_at = time.monotonic()
        self._m_head.set(head.latest)
        self._set_cursor_metrics()
        for event in self._wakeups:
            event.set()

    def _set_cursor_metrics(self) -> None:
        if self.cursor is None or self.head is None:
            return
        self._m_cursor.set(self.cursor.number)
        self._m_lag.set(max(0, self.head.latest - self.cursor.number))
        self._m_confirm_lag.set(max(0, self.policy.confirmable(self.head) - self.cursor.number))

    async def _head_loop(self) -> None:
        failures = Failures(every=HEAD_LOG_EVERY)
        while not self._stop.is_set():
            try:
                head = await self._read_head()
            except WrongChain:
                raise  # every endpoint serves another chain: retrying cannot help
            except Exception as exc:
                if failures.failed():
                    log.warning("head poll failed", extra={"error": str(exc)[:300]})
            else:
                failures.reset()
                self._set_head(head)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.options.poll_interval)

    async def _next_head(self, event: asyncio.Event) -> None:
        """Wait for a new head (or stop)."""
        await event.wait()
        event.clear()

    # -- confirmed -------------------------------------------------------------------------

    async def _confirm_loop(self) -> None:
        wake = asyncio.Event()
        self._wakeups.append(wake)
        window: deque[tuple[int, int, asyncio.Task[Scan], dict[int, int]]] = deque()
        next_start = self._sent_cursor.number + 1
        try:
            while not self._stop.is_set():
                if self._rewound:
                    for _, _, task, _ in window:
                        task.cancel()
                    window.clear()
                    next_start = self._sent_cursor.number + 1
                    self._rewound = False
                if len(self._inflight) >= 2 * self.options.concurrency:
                    # Bounded: at most this many ranges sent and not yet acked.
                    self._inflight_changed.clear()
                    await self._inflight_changed.wait()
                    continue
                target = self.policy.confirmable(self._head)
                while len(window) < self.options.concurrency and next_start <= target:
                    end = min(target, next_start + self.sizer.size - 1)
                    # Every address below these positions is in the set this range is read with.
                    positions = dict(self.watch.positions)
                    task = asyncio.create_task(self._fetch(next_start, end, self.watch.watch_set))
                    window.append((next_start, end, task, positions))
                    self._planned_to = max(self._planned_to, end)
                    next_start = end + 1
                if not window:
                    await self._next_head(wake)
                    continue
                start, end, first, positions = window[0]
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait([first, waiter], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not first.done():
                    wake.clear()
                    continue  # a new head (plan more ranges) or a stop
                window.popleft()
                scan = first.result()
                async with self._lock:
                    if self._rewound:
                        continue
                    try:
                        await self._confirm(scan, positions)
                    except _PublishFailed as exc:
                        log.warning(
                            "send failed; sending again from the cursor",
                            extra={"error": str(exc)[:300]},
                        )
                        self._m_publish_failures.inc()
                        self._rewind_sending()
                        await asyncio.sleep(self.options.backoff.delay(1))
                        continue
                    except _CursorOffChain as exc:
                        log.critical("the chain changed under the cursor", extra={"why": str(exc)})
                        await self._recover_cursor()
                        continue
                    except _Inconsistent as exc:
                        log.warning(
                            "range disagrees with the ring; fetching it again",
                            extra={"start": start, "end": end, "why": str(exc)},
                        )
                        again = asyncio.create_task(self._refetch(start, end))
                        window.appendleft((start, end, again, dict(self.watch.positions)))
                        continue
        finally:
            for _, _, task, _ in window:
                task.cancel()
            self._wakeups.remove(wake)
            self._sending_done = True
            self._inflight_changed.set()

    async def _commit_loop(self) -> None:
        """Move the cursor over each range sent, in order, once the broker acked all of it."""
        failures = 0
        while True:
            if not self._inflight:
                if self._sending_done:
                    return
                self._inflight_changed.clear()
                await self._inflight_changed.wait()
                continue
            entry = self._inflight[0]
            try:
                for delivered in entry.delivered:
                    await asyncio.shield(delivered)
            except Exception as exc:
                failures += 1
                self._m_publish_failures.inc()
                log.warning(
                    "publish failed; sending again from the cursor (it does not move)",
                    extra={"error": str(exc)[:300], "failures": failures},
                )
                async with self._lock:
                    if entry.generation == self._generation:
                        self._rewind_sending()
                if self._sending_done and failures >= 3:
                    return  # stopping: the cursor stays where the acks justify it
                await asyncio.sleep(self.options.backoff.delay(failures))
                continue
            failures = 0
            if self._inflight and self._inflight[0] is entry:
                self._inflight.popleft()
                self._inflight_changed.set()
            if entry.generation != self._generation:
                continue  # sent before a rewind: the cursor must not follow it
            self.cursor = entry.cursor
            self._scanned_with = entry.positions
            self._set_cursor_metrics()
            self._cursor_moved.set()
            await self._write_cursor()

    def _rewind_sending(self) -> None:
        """Send again from the acknowledged cursor: ranges in flight no longer count."""
        self._generation += 1
        self._inflight.clear()
        self._inflight_changed.set()
        self._sent = self._cursor
        self._rewound = True

    async def _refetch(self, start: int, end: int) -> Scan:
        await asyncio.sleep(self.options.poll_interval)
        return await self._fetch(start, end, self.watch.watch_set)

    async def _confirm(self, scan: Scan, positions: dict[int, int]) -> None:
        """Send a range's confirmed transfers (and reverts) and queue it for the commit loop.

        Called under ``_lock``, in range order; ``positions``: the watchlist positions the
        range was read with. Does not wait for acks (the commit loop does).
        """
        cursor = self._sent_cursor
        if cursor.hash and scan.start == cursor.number + 1 and scan.parent_hash != cursor.hash:
            raise _CursorOffChain(
                f"block {scan.start}'s parent is {scan.parent_hash}, the cursor is {cursor.hash}"
            )
        ref = self.ring.get(scan.end)
        if ref is not None and ref.hash != scan.end_hash:
            raise _Inconsistent(f"block {scan.end} is {scan.end_hash}, the ring has {ref.hash}")
        for t in scan.transfers:
            ref = self.ring.get(t.block_number)
            if ref is not None and ref.hash != t.block_hash:
                raise _Inconsistent(f"block {t.block_number} hash differs from the ring")
        present = {t.identity for t in scan.transfers}
        missing = [
            t for t in self.ledger.detected_in(scan.start, scan.end) if t.identity not in present
        ]
        vanished = missing
        confirmed = list(scan.transfers)
        if missing:
            # Absent from a query over the *current* watch set may only mean "no longer
            # watched" (a tombstone came in between): ask about exactly those addresses, and
            # confirm what is still there (the matcher decides what a late payment is).
            wanted = {t.identity for t in missing}
            again = await self._fetch(scan.start, scan.end, self._keys_of(missing))
            still = [t for t in again.transfers if t.identity in wanted]
            found = {t.identity for t in still}
            vanished = [t for t in missing if t.identity not in found]
            confirmed += still
        latest = self._head.latest
        try:
            delivered = [
                await self.publisher.send(vanished, TransferStage.REVERTED, latest),
                await self.publisher.send(confirmed, TransferStage.CONFIRMED, latest),
            ]
        except Exception as exc:
            raise _PublishFailed(str(exc)) from exc
        if vanished:
            log.warning(
                "detections gone at confirmation: reverted",
                extra={"start": scan.start, "end": scan.end, "reverted": len(vanished)},
            )
        self.ledger.forget(vanished)
        base = self.ring.base
        if self.ledger.detected or base is not None:
            # Only what the ring still covers can be taken back by a reorg it sees; a catch-up
            # far below the ring keeps nothing (10,000s of transfers per range).
            self.ledger.confirm(
                t for t in confirmed if base is None or t.block_number >= base.number
            )
        if base is not None:
            self.ledger.trim_confirmed(base.number)
        else:
            self.ledger.confirmed.clear()
        self._sent = Cursor(scan.end, scan.end_hash, scan.end_time)
        self._inflight.append(_InFlight(self._sent, delivered, positions, self._generation))
        self._inflight_changed.set()
        self._m_blocks["confirmed"].inc(scan.end - scan.start + 1)

    async def _publish(
        self, transfers: Sequence[Transfer], stage: TransferStage, latest: int
    ) -> None:
        failures = 0
        while True:
            try:
                await self.publisher.publish(transfers, stage, latest)
                return
            except Exception as exc:
                failures += 1
                self._m_publish_failures.inc()
                if self._stop.is_set() and failures >= 3:
                    raise
                log.warning(
                    "publish failed; retrying (the cursor does not move)",
                    extra={"error": str(exc)[:300], "stage": stage.value, "failures": failures},
                )
                await asyncio.sleep(self.options.backoff.delay(failures))

    async def _fetch(self, start: int, end: int, watched: WatchView) -> Scan:
        """All watched transfers in ``[start, end]``: split when refused, retried when failed,
        never given up (only cancelled)."""
        failures = Failures(every=RETRY_LOG_EVERY)
        while True:
            began = time.monotonic()
            try:
                scan = await self.source.transfers(start, end, watched)
            except RangeTooLarge:
                self._m_refusals.inc()
                span = end - start + 1
                if span > 1:
                    self.sizer.refused(span)
                    self._m_range.set(self.sizer.size)
                    mid = start + min(self.sizer.size, span // 2) - 1
                    left = await self._fetch(start, mid, watched)
                    right = await self._fetch(mid + 1, end, watched)
                    transfers = left.transfers + right.transfers
                    return Scan(
                        start, end, left.parent_hash, right.end_hash, transfers, right.end_time
                    )
                failures.failed()  # counted for the backoff; a refusal is logged every time
                log.error("a one-block range was refused; retrying", extra={"block": start})
            except EndpointBehind:
                # No endpoint has reported block ``end`` yet: wait for the heads to move.
                await asyncio.sleep(self.options.poll_interval)
                continue
            except WrongChain:
                raise  # every endpoint serves another chain: retrying cannot help
            except Exception as exc:
                self._m_retries.inc()
                if failures.failed():
                    log.warning(
                        "range failed; retrying it (never skipped)",
                        extra={"start": start, "end": end, "error": str(exc)[:300]},
                    )
            else:
                self.sizer.succeeded(end - start + 1, time.monotonic() - began)
                self._m_range.set(self.sizer.size)
                return scan
            await asyncio.sleep(self.options.backoff.delay(failures.count))

    async def _write_cursor(self, *, force: bool = False) -> None:
        cursor = self.cursor
        if cursor is None or cursor == self._written:
            return
        if not force and time.monotonic() - self._written_at < self.options.cursor_interval:
            return
        if not self.lease.valid():
            log.warning("not writing the cursor: the lease is no longer certain")
            return
        try:
            await self.cursors.write(cursor, self.fence, self._covered())
        except Exception as exc:
            # The next write carries a newer cursor; losing this one only means a restart
            # would publish a few more duplicates.
            log.warning("cursor write failed", extra={"error": str(exc)[:300]})
            return
        self._written, self._written_at = cursor, time.monotonic()

    # -- progress markers ------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            await self._wait(self._cursor_moved)
            if self._stop.is_set():
                return
            self._cursor_moved.clear()
            # Throttled: a move right after a round waits for the interval to end, then the
            # round names the cursor as it is by then (so nothing waits longer than that).
            wait = self._marked_at + self.options.progress_interval - time.monotonic()
            if wait > 0:
                await self._wait(None, seconds=wait)
            if self._late:
                await self._wait(self._late_idle)
            if self._stop.is_set():
                return
            try:
                await self._mark_progress()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("progress markers failed", extra={"error": str(exc)[:300]})
                self._cursor_moved.set()  # try again
                await asyncio.sleep(self.options.backoff.delay(failures))

    async def _wait(self, event: asyncio.Event | None, *, seconds: float | None = None) -> None:
        """Until ``event`` is set, the scan is stopping, or ``seconds`` passed."""
        waiters = [asyncio.create_task(self._stop.wait())]
        if event is not None:
            waiters.append(asyncio.create_task(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _mark_progress(self) -> None:
        """Write a ``ChainScanned`` round for the cursor if it moved on since the last round.

        The cursor only ever stands where every transfer up to it was acked, so the round
        never precedes a transfer it covers. Skipped without a valid lease (only the leader
        speaks for the chain), while late addresses still wait for their back-fill, and for a
        cursor whose block time is unknown (a resumed cursor, before its first range).
        """
        cursor = self.cursor
        if cursor is None or cursor.time is None or self._late:
            return
        marked = self._marked
        if marked is not None and cursor.number <= marked.number:
            return  # nothing new (or rewound by a reorg: the next move is written)
        if not self.lease.valid():
            log.warning("not writing progress markers: the lease is no longer certain")
            return
        await self.publisher.mark_scanned(cursor.number, cursor.hash, cursor.time, self.fence)
        self._marked, self._marked_at = cursor, time.monotonic()
        self._m_progress.set(cursor.number)

    # -- detected and reorgs ---------------------------------------------------------------

    async def _detect_loop(self) -> None:
        wake = asyncio.Event()
        self._wakeups.append(wake)
        failures = Failures(every=HEAD_LOG_EVERY)
        try:
            while not self._stop.is_set():
                try:
                    await self._follow_head()
                    failures.reset()
                except (ForkDetected, _Inconsistent):
                    continue  # handled: look again at once
                except WrongChain:
                    raise  # every endpoint serves another chain: retrying cannot help
                except Exception as exc:
                    if failures.failed():
                        log.warning("following the head failed", extra={"error": str(exc)[:300]})
                await self._next_head(wake)
        finally:
            self._wakeups.remove(wake)

    async def _follow_head(self) -> None:
        head = self._head
        target = self.policy.detectable(head)
        if target is None or target < 0:
            return
        size = self.options.ring_size
        tip = self.ring.tip
        if tip is None or target - tip.number >= size:
            # First look, or too far behind to link up (catching up): start afresh near the head.
            self.ring.reset()
            start = max(0, target - size + 1)
            old_tip = start - 1
        else:
            # From the tip itself: a replaced tip shows as a different hash at its height.
            start = min(tip.number, target)
            old_tip = tip.number
        refs = await self.source.blocks(start, target)
        try:
            self.ring.extend(refs)
        except ForkDetected as fork:
            await self._handle_reorg(head, fork.number)
            raise
        fresh = [r for r in refs if r.number > old_tip]
        if not fresh:
            return
        scan = await self.source.transfers(fresh[0].number, fresh[-1].number, self.watch.watch_set)
        for t in scan.transfers:
            ref = self.ring.get(t.block_number)
            if ref is None or ref.hash != t.block_hash:
                # The chain moved between the two queries: forget these blocks and look again.
                self.ring.truncate_after(old_tip)
                raise _Inconsistent(f"block {t.block_number} changed while being read")
        async with self._lock:
            floor = self._sent_cursor.number  # sent as confirmed already: no detected after
            new = [
                t
                for t in scan.transfers
                if t.block_number > floor and t.identity not in self.ledger.detected
            ]
            await self._publish(new, TransferStage.DETECTED, head.latest)
            self.ledger.detect(new)
        self._m_blocks["detected"].inc(len(fresh))

    async def _handle_reorg(self, head: ChainHead, at: int) -> None:
        """Rewind the ring to the fork point; publish ``reverted`` for what vanished above it;
        move the cursor back too if its own block is no longer on the chain."""
        base, tip = self.ring.base, self.ring.tip
        if base is None or tip is None:
            return  # nothing followed yet, so nothing to rewind
        self._m_reorgs.inc()
        canonical = await self.source.blocks(base.number, min(tip.number, head.latest))
        fork = self.ring.fork_point(canonical)
        if fork is None:
            fork = base.number - 1
            log.critical(
                "reorg deeper than the ring: everything it held is looked up again",
                extra={"ring_base": base.number, "ring_tip": tip.number},
            )
        depth = tip.number - fork
        self._m_reorg_depth.observe(depth)
        self.ring.truncate_after(fork)
        async with self._lock:
            reverted = await self._revert_above(fork, head)
            sent = self._sent_cursor
            if fork < sent.number and not await self._on_chain(sent, canonical):
                # Deeper than the confirmations: confirmed blocks are scanned again from the
                # fork (their transfers are published once more; the vanished ones reverted).
                known = next((r for r in canonical if r.number == fork), None)
                self._rewind_to(Cursor(fork, known.hash if known else ""))
                log.critical(
                    "reorg below the confirmed cursor; rescanning",
                    extra={"fork": fork, "cursor_was": sent.number},
                )
        log.warning("reorg", extra={"at": at, "fork": fork, "depth": depth, "reverted": reverted})

    async def _on_chain(self, cursor: Cursor, canonical: Sequence[BlockRef]) -> bool:
        """Whether the cursor's block is still on the chain (the confirm loop may already have
        moved past the fork on the new chain, before the ring noticed it)."""
        known = next((r for r in canonical if r.number == cursor.number), None)
        if known is None:
            refs = await self.source.blocks(cursor.number, cursor.number)
            known = refs[-1] if refs else None
        return known is not None and known.hash == cursor.hash

    async def _revert_above(self, fork: int, head: ChainHead) -> int:
        """Publish ``reverted`` for every tracked transfer above ``fork`` that the chain no
        longer holds; track the survivors where they are now. Call under ``_lock``."""
        affected = self.ledger.published_above(fork)
        if not affected:
            return 0
        now = await self.source.transfers(
            fork + 1, head.latest, _Union(self.watch.watch_set, self._keys_of(affected))
        )
        moved = {t.identity: t for t in now.transfers}
        vanished = [t for t in affected if t.identity not in moved]
        await self._publish(vanished, TransferStage.REVERTED, head.latest)
        self.ledger.forget(vanished)
        self.ledger.detect(
            moved[t.identity]
            for t in affected
            if t.identity in moved and t.identity in self.ledger.detected
        )
        return len(vanished)

    async def _recover_cursor(self) -> None:
        """The confirm loop found its next range off the cursor's chain (a reorg the ring did not
        see: detection off, or deeper than the ring). Find the fork as well as the ring allows,
        revert what vanished, and rescan from there. Call under ``_lock``."""
        self._m_reorgs.inc()
        head, cursor = self._head, self._sent_cursor
        fork: int | None = None
        base, tip = self.ring.base, self.ring.tip
        if base is not None and tip is not None and base.number <= cursor.number:
            canonical = await self.source.blocks(base.number, min(tip.number, head.latest))
            fork = self.ring.fork_point(canonical)
        if fork is None or fork >= cursor.number:
            fork = max(-1, cursor.number - self.options.ring_size)
        self.ring.truncate_after(fork)
        reverted = await self._revert_above(fork, head)
        self._rewind_to(await self._cursor_at(fork))
        self._m_reorg_depth.observe(cursor.number - fork)
        log.critical(
            "rescanning from below a reorg under the cursor",
            extra={"fork": fork, "cursor_was": cursor.number, "reverted": reverted},
        )

    # -- late addresses --------------------------------------------------------------------

    def _late_added(self, key: bytes, partition: int, offset: int, since: datetime | None) -> None:
        self._late[key] = Late(partition, offset, since)
        self._late_idle.clear()
        self._late_event.set()

    def _covered(self) -> dict[int, int]:
        """Watchlist offsets below which every address is covered up to the cursor: where the
        newest confirmed range was read, held back by addresses not yet looked up."""
        covered = dict(self._scanned_with)
        for late in self._late.values():
            covered[late.partition] = min(covered.get(late.partition, late.offset), late.offset)
        return covered

    async def _backfill_loop(self) -> None:
        while not self._stop.is_set():
            await self._late_event.wait()
            self._late_event.clear()
            while self._late and not self._stop.is_set():
                # The oldest sessions first, so one batch spans about one stretch of blocks
                # (sorted once a pass: a first start may bring 100,000s of addresses).
                queue = sorted(self._late, key=lambda k: self._late[k].order)
                for first in range(0, len(queue), self.options.backfill_batch):
                    if self._stop.is_set():
                        return
                    chunk = queue[first : first + self.options.backfill_batch]
                    batch = {key: self._late[key] for key in chunk if key in self._late}
                    if batch:
                        await self._backfill(batch)
            if not self._late:
                self._late_idle.set()

    async def _backfill(self, batch: dict[bytes, Late]) -> None:
        """Look ``batch`` up over the blocks scanned so far, from its oldest session's
        creation; publish what it finds (confirmed) and forget the addresses."""
        keys = frozenset(batch)
        high = self._planned_to
        low = await self._backfill_low(batch.values(), high)
        self._m_backfill_from.set(low)
        found = 0
        for lo in range(low, high + 1, self.sizer.size):
            if self._stop.is_set():
                return
            hi = min(high, lo + self.sizer.size - 1)
            scan = await self._fetch(lo, hi, keys)
            async with self._lock:
                await self._publish(scan.transfers, TransferStage.CONFIRMED, self._head.latest)
                self.ledger.confirm(scan.transfers)
            found += len(scan.transfers)
        if found:
            log.info(
                "late addresses had transfers in scanned blocks",
                extra={"transfers": found, "low": low, "high": high},
            )
        for key, mark in batch.items():
            if self._late.get(key) == mark:  # not re-added meanwhile
                del self._late[key]
        self._m_backfilled.inc(len(batch))

    async def _backfill_low(self, batch: Iterable[Late], high: int) -> int:
        """First block to look the batch up from: the block at its oldest session's creation
        (less ``backfill_margin``), and never less than ``backfill_blocks`` back (the window of
        a ``WatchAddress`` without ``created_at``)."""
        low = max(0, high - self.options.backfill_blocks + 1)
        times = [late.since for late in batch if late.since is not None]
        if not times or high < 0:
            return low
        oldest = datetime.now(UTC) - timedelta(seconds=self.options.backfill_max_age)
        since = max(min(times), oldest) - timedelta(seconds=self.options.backfill_margin)
        # Whole minutes (earlier, so never less coverage): sessions created in one minute
        # share one search, and a block's time never changes.
        minute = int(since.timestamp()) // 60 * 60
        at = self._block_at_minute.get(minute)
        if at is None:
            moment = datetime.fromtimestamp(minute, UTC)
            at = await self._retry(
                "find the block at a session's creation",
                lambda: block_at(moment, high, self.source.block_time),
            )
            if len(self._block_at_minute) >= BLOCK_AT_CACHE:
                self._block_at_minute.clear()
            self._block_at_minute[minute] = at
        return min(low, at)

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _head(self) -> ChainHead:
        if self.head is None:
            raise RuntimeError("no head yet: run() reads one before any loop starts")
        return self.head

    def _rewind_to(self, fork: Cursor) -> None:
        """Scan again from ``fork`` (a reorg took the blocks above it): sending restarts there,
        and the cursor moves back to it if it had passed it."""
        if self._cursor.number > fork.number:
            self.cursor = fork
            self._set_cursor_metrics()
        self._rewind_sending()
        self._sent = fork

    @property
    def _sent_cursor(self) -> Cursor:
        if self._sent is None:
            raise RuntimeError("nothing sent yet: run() sets the cursor before any loop starts")
        return self._sent

    @property
    def _cursor(self) -> Cursor:
        if self.cursor is None:
            raise RuntimeError("no cursor yet: run() sets one before any loop starts")
        return self.cursor

    def _keys_of(self, transfers: Sequence[Transfer]) -> frozenset[bytes]:
        return frozenset(self.source.address_key(t.to_address) for t in transfers)

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        failures = Failures(every=RETRY_LOG_EVERY)
        while True:
            try:
                return await op()
            except WrongChain:
                raise  # every endpoint serves another chain: retrying cannot help
            except Exception as exc:
                if failures.failed():
                    log.warning(f"{what} failed; retrying", extra={"error": str(exc)[:300]})
                if self._stop.is_set():
                    raise
                await asyncio.sleep(self.options.backoff.delay(failures.count))
