"""Follow ``chain.watchlist`` into the watch set: from the beginning at start, then live.

The topic is compacted and keyed ``{network}:{mode}:{address}``; a tombstone (null value)
stops watching. This watcher keeps only its own network and mode (a key-prefix test, before
any JSON is parsed). ``loaded`` is set once the follower has read up to the end offsets that
existed when it started: a watcher must not scan before that, or it would miss transfers to
addresses it simply had not read yet.

Addresses that arrive *after* the load may have been paid in blocks the scan already passed
(the api's outbox can lag): each one is handed to ``on_added`` with its partition and offset so
the scanner looks it up over those blocks. ``positions`` (per partition, the next offset to
read) and ``additions_since(marks)`` let a new leader find exactly the addresses that the
previous leader's last cursor does not vouch for (``core.cursor``: the ``covered`` marks).

A record of this watcher's key prefix that cannot be used (not JSON, invalid, a newer major
schema version, another network's event under this key, a bad address) never stops the watch
set from building: it is counted, and sent to the dead-letter topic in the background. Nothing
here commits offsets (every start reads the topic from the beginning), so a letter whose write
failed is written again at the next start, and a letter is written once per start and replica:
``pago-dlq`` shows each original record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from pago.common.deadletter import DeadLetter, DeadLetterSink, Reason, Rejected, decode
from pago.common.enums import Mode, Network
from pago.common.events import WatchAddress
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key
from pago.watcher import metrics
from pago.watcher.core.watch_set import WatchSet

log = logging.getLogger(__name__)

EVICT_EVERY = 5.0
"""Seconds between two eviction slices (65,536 slots each: a 2^21-slot table in ~3 min)."""
RECENT_MAX = 200_000
"""Most recent additions remembered (partition, offset, key, created_at) for a new leader's
lookup."""


@dataclass(frozen=True, slots=True)
class Late:
    """An address to look up over blocks already scanned: where its record is, and since when
    its session exists (``WatchAddress.created_at``; None from an older api)."""

    partition: int
    offset: int
    since: datetime | None

    @property
    def order(self) -> float:
        """Oldest sessions first; those without ``created_at`` (the fixed window) last."""
        return self.since.timestamp() if self.since is not None else float("inf")


class WatchlistFollower:
    def __init__(
        self,
        bootstrap_servers: str,
        network: Network,
        mode: Mode,
        watch_set: WatchSet,
        key_of: Callable[[str], bytes],
        *,
        retention_seconds: float = 7 * 86_400,
        wall_clock: Callable[[], float] = time.time,
        deadletters: DeadLetterSink | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._network = network
        self._mode = mode
        self._prefix = watchlist_key(network.value, mode.value, "").encode()
        self.watch_set = watch_set
        self._key_of = key_of
        self._retention = retention_seconds
        self._wall = wall_clock
        self.loaded = asyncio.Event()
        self.on_added: Callable[[bytes, int, int, datetime | None], None] | None = None
        """Called (while loaded) with (key, partition, offset, created_at) for each address that
        was not watched before."""
        self.positions: dict[int, int] = {}
        """Per partition, the offset of the next record to apply: every record below it is in
        the watch set."""
        self._recent: deque[tuple[int, int, bytes, datetime | None]] = deque(maxlen=RECENT_MAX)
        self._forgotten: dict[int, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._deadletters = deadletters
        self._letters: list[DeadLetter] = []
        self._sending: set[asyncio.Task[None]] = set()
        labels = (network.value, mode.value)
        self._size = metrics.WATCH_SET_SIZE.labels(*labels)
        self._bytes = metrics.WATCH_SET_BYTES.labels(*labels)
        self._invalid = {
            reason: metrics.WATCHLIST_INVALID.labels(*labels, reason)
            for reason in ("unparsable", "wrong_network", "bad_address", "unsupported_version")
        }

    def additions_since(
        self, marks: Mapping[int, int]
    ) -> tuple[list[tuple[bytes, int, int, datetime | None]], bool]:
        """Addresses added at or after ``marks`` (offset per partition; absent: 0) and still
        watched, as (key, partition, offset, created_at); and whether the list is complete
        (False when more than ``RECENT_MAX`` additions ago had to be forgotten)."""
        found = [
            (key, p, o, since)
            for p, o, key, since in self._recent
            if o >= marks.get(p, 0) and key in self.watch_set
        ]
        complete = all(o < marks.get(p, 0) for p, o in self._forgotten.items())
        return found, complete

    async def run(self) -> None:
        """Consume until ``stop()``; reconnects are aiokafka's, errors are logged and retried."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap.split(","),
            enable_auto_commit=False,
            client_id="pago-watcher-watchlist",
            max_partition_fetch_bytes=4 << 20,
        )
        self._consumer = consumer
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            starts = await consumer.beginning_offsets(tps)
            self.positions = {tp.partition: starts[tp] for tp in tps}
            ends = await consumer.end_offsets(tps)
            started = time.monotonic()
            next_eviction = started
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(*tps, timeout_ms=250, max_records=20_000)
                except KafkaError as exc:
                    log.warning("watchlist fetch failed; retrying", extra={"error": str(exc)})
                    await asyncio.sleep(1.0)
                    continue
                for tp, records in batch.items():
                    for record in records:
                        self._apply(record)
                    if records:
                        self.positions[tp.partition] = records[-1].offset + 1
                self._flush_letters()
                self._size.set(len(self.watch_set))
                self._bytes.set(self.watch_set.nbytes)
                if not self.loaded.is_set() and not [
                    tp for tp in tps if await consumer.position(tp) < ends[tp]
                ]:
                    self.loaded.set()
                    log.info(
                        "watch set loaded",
                        extra={
                            "addresses": len(self.watch_set),
                            "seconds": round(time.monotonic() - started, 3),
                        },
                    )
                if self.loaded.is_set() and time.monotonic() >= next_eviction:
                    # A slice of the table at a time: expired entries go without a pause.
                    self.watch_set.evict_expired(int(self._wall() - self._retention))
                    next_eviction = time.monotonic() + EVICT_EVERY
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = consumer.partitions_for_topic(CHAIN_WATCHLIST)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(CHAIN_WATCHLIST)
            if not partitions:
                log.warning("topic %s not found yet; waiting", CHAIN_WATCHLIST)
                await asyncio.sleep(1.0)
        tps = [TopicPartition(CHAIN_WATCHLIST, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return tps

    def _reject(self, record: ConsumerRecord[bytes, bytes], reason: str, why: Rejected) -> None:
        self._invalid[reason].inc()
        log.error(
            "unusable watchlist record; dead-lettered",
            extra={
                "partition": record.partition,
                "offset": record.offset,
                "reason": why.reason.value,
                "detail": why.detail,
            },
        )
        self._letters.append(DeadLetter.of(record, why))

    def _flush_letters(self) -> None:
        """Hand this poll's letters to the dead-letter writer without waiting for it."""
        if not self._letters or self._deadletters is None:
            self._letters.clear()
            return
        task = asyncio.create_task(self._send(self._deadletters, list(self._letters)))
        self._letters.clear()
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, sink: DeadLetterSink, letters: list[DeadLetter]) -> None:
        try:
            await sink.send(letters)
        except Exception:
            log.warning(
                "could not dead-letter watchlist records; they are re-read at the next start",
                exc_info=True,
            )

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        key = record.key
        if key is None or not key.startswith(self._prefix):
            return
        if record.value is None:
            try:
                self.watch_set.discard(self._key_of(key[len(self._prefix) :].decode()))
            except (ValueError, UnicodeDecodeError) as exc:
                why = Rejected(Reason.INVALID, f"tombstone with a bad address: {exc}")
                self._reject(record, "bad_address", why)
            return
        try:
            watch = decode(record, WatchAddress.model_validate_json)
        except Rejected as why:
            too_new = why.reason is Reason.UNSUPPORTED_VERSION
            self._reject(record, "unsupported_version" if too_new else "unparsable", why)
            return
        if watch.network is not self._network or watch.mode is not self._mode:
            detail = f"a {watch.network.value}:{watch.mode.value} address under this key"
            self._reject(record, "wrong_network", Rejected(Reason.INVALID, detail))
            return
        try:
            address_key = self._key_of(watch.address)
        except ValueError as exc:
            self._reject(record, "bad_address", Rejected(Reason.INVALID, f"bad address: {exc}"))
            return
        until = int(watch.watch_until.timestamp())
        if until + self._retention < self._wall():
            self.watch_set.discard(address_key)  # long over: not worth memory
            return
        if self.watch_set.add(address_key, until):
            # Remembered (also during the load) so that a new leader can look it up if the
            # previous leader may have scanned past its payment without it.
            if len(self._recent) == RECENT_MAX:
                p, o, _, _ = self._recent[0]
                self._forgotten[p] = max(self._forgotten.get(p, -1), o)
            since = watch.created_at
            self._recent.append((record.partition, record.offset, address_key, since))
            if self.loaded.is_set() and self.on_added is not None:
                self.on_added(address_key, record.partition, record.offset, since)

    def stop(self) -> None:
        self._stopping.set()
