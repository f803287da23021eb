"""Publish ``TransferObserved`` (and ``ChainScanned`` progress markers) to ``chain.transfers``
and wait for the broker's acks.

Keyed ``{network}:{to_address}`` so every transfer to one address lands on one partition in
the order it was sent; the producer is idempotent with ``acks=all`` (``pago.common.kafka``), so
a retried send neither duplicates nor reorders within a partition. ``publish`` returns only
once the broker acknowledged every record: the caller may then move the cursor.

Records go out as one record batch per partition rather than one ``send()`` each, and the
partition is chosen here by Kafka's default rule (murmur2 of the key), remembered per key:
per-record futures and the pure-Python murmur2 were most of a catch-up's publishing time.

Every record carries the headers ``v`` (schema version) and ``event_type`` (``TransferObserved``
or ``ChainScanned``), so a consumer tells the two apart before parsing the value.

A ``ChainScanned`` round is one marker per partition of the topic (explicit partition, key
``{network}:{mode}``), sent only once every transfer up to its block was acknowledged: a
consumer that reads the marker in partition ``p`` has read every earlier transfer of this
network × mode in ``p`` (the idempotent producer keeps a partition's order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from pago.common.enums import Mode, Network, TransferStage
from pago.common.events import ChainScanned, TransferObserved
from pago.common.topics import CHAIN_TRANSFERS, cursor_key, transfer_key
from pago.watcher import metrics
from pago.watcher.core.model import Transfer


def utc_now() -> datetime:
    return datetime.now(UTC)


PARTITION_CACHE = 100_000
FENCE_HEADER = "pago-fence"
"""The writer's leadership term on each marker (as on cursor records): for diagnosis only."""


def _headers(event_type: type[TransferObserved | ChainScanned]) -> list[tuple[str, bytes]]:
    version = event_type.model_fields["v"].default
    return [("v", str(version).encode()), ("event_type", event_type.__name__.encode())]


TRANSFER_HEADERS = _headers(TransferObserved)
SCANNED_HEADERS = _headers(ChainScanned)


async def _all(acks: list[asyncio.Future[object]]) -> None:
    await asyncio.gather(*acks)


class TransferPublisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        network: Network,
        mode: Mode,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._producer = producer
        self._network = network
        self._mode = mode
        self._clock = clock
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[bytes, int] = {}
        self._published = {
            stage: metrics.TRANSFERS_PUBLISHED.labels(network.value, mode.value, stage.value)
            for stage in TransferStage
        }
        self._markers = metrics.PROGRESS_MARKERS.labels(network.value, mode.value)

    def event(self, t: Transfer, stage: TransferStage, confirmations: int) -> TransferObserved:
        return TransferObserved(
            network=self._network,
            mode=self._mode,
            token=t.token,
            contract=t.contract,
            tx_hash=t.tx_hash,
            log_index=t.log_index,
            block_number=t.block_number,
            block_hash=t.block_hash,
            from_address=t.from_address,
            to_address=t.to_address,
            amount_raw=t.amount_raw,
            decimals=t.decimals,
            confirmations=confirmations,
            stage=stage,
            observed_at=self._clock(),
            block_time=t.block_time,
        )

    async def publish(
        self, transfers: Sequence[Transfer], stage: TransferStage, latest: int
    ) -> None:
        """Send ``transfers`` at ``stage`` (``latest``: the head, for their confirmations) and
        return once the broker acked all of them; raises if any send failed."""
        await (await self.send(transfers, stage, latest))

    async def send(
        self, transfers: Sequence[Transfer], stage: TransferStage, latest: int
    ) -> asyncio.Future[None]:
        """Hand ``transfers`` to the producer, in order, without waiting for the broker; the
        result completes once every one of them was acked (and raises if one was not). Later
        sends to a partition stay behind earlier ones (idempotent producer)."""
        if not transfers:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        network = self._network.value
        reverted = stage is TransferStage.REVERTED
        for t in transfers:
            depth = 0 if reverted else max(0, latest - t.block_number)
            key = transfer_key(network, t.to_address).encode()
            record = (key, self.event(t, stage, depth).to_bytes())
            partition = self._partitions.get(key)
            if partition is None:
                partition = await self._partition(key)
            by_partition.setdefault(partition, []).append(record)
        acks: list[asyncio.Future[object]] = []
        headers = TRANSFER_HEADERS
        for partition, records in by_partition.items():
            # One record batch per partition (more when full), records in their given order;
            # a future per batch instead of one per record: ~5× less work than send().
            batch = self._producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    acks.append(await self._send(batch, partition))
                    batch = self._producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record of {len(value)} bytes exceeds a batch")
            acks.append(await self._send(batch, partition))
        delivered: asyncio.Future[None] = asyncio.ensure_future(_all(acks))
        counter, count = self._published[stage], len(transfers)

        def count_once_acked(future: asyncio.Future[None]) -> None:
            # Also marks a failure as retrieved: a dropped delivery (rewound) logs nothing.
            if not future.cancelled() and future.exception() is None:
                counter.inc(count)

        delivered.add_done_callback(count_once_acked)
        return delivered

    async def mark_scanned(
        self, block_number: int, block_hash: str, block_time: datetime, fence: int
    ) -> int:
        """Write one ``ChainScanned`` to every partition of the topic and wait for the acks.

        Call only once every transfer up to ``block_number`` was acknowledged. Returns the
        number of partitions (from the producer's metadata, refreshed when it has none).
        """
        partitions = sorted(await self._producer.partitions_for(CHAIN_TRANSFERS))
        key = cursor_key(self._network.value, self._mode.value).encode()
        headers = [*SCANNED_HEADERS, (FENCE_HEADER, str(fence).encode())]
        now = self._clock()
        acks = []
        for partition in partitions:
            marker = ChainScanned(
                network=self._network,
                mode=self._mode,
                block_number=block_number,
                block_hash=block_hash,
                block_time=block_time,
                partition=partition,
                partitions=len(partitions),
                scanned_at=now,
            )
            acks.append(
                await self._producer.send(
                    CHAIN_TRANSFERS,
                    marker.to_bytes(),
                    key=key,
                    partition=partition,
                    headers=headers,
                )
            )
        await asyncio.gather(*acks)
        self._markers.inc(len(partitions))
        return len(partitions)

    async def _send(self, batch: BatchBuilder, partition: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, CHAIN_TRANSFERS, partition=partition
        )
        return future

    async def _partition(self, key: bytes) -> int:
        partition = self._partitions.get(key)
        if partition is None:
            partitions = sorted(await self._producer.partitions_for(CHAIN_TRANSFERS))
            partition = int(self._partitioner(key, partitions, partitions))
            if len(self._partitions) >= PARTITION_CACHE:
                self._partitions.clear()
            self._partitions[key] = partition
        return partition
