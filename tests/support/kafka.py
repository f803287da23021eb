"""Read what really reached the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    key_prefix: str = "",
    timeout: float = 30.0,
    start: Mapping[int, int] | None = None,
    keep: Callable[[ConsumerRecord[bytes, bytes]], bool] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning (every partition) until ``until(records)`` holds.

    Only records whose key starts with ``key_prefix`` are kept (or, given ``keep``, those it
    accepts: also records without a key); ``start`` (partition → offset, e.g. ``end_offsets``
    taken earlier) skips what came before. Raises ``TimeoutError`` with what
    was read so far, so a failing test says how far it got.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        for partition, offset in (start or {}).items():
            consumer.seek(TopicPartition(topic, partition), offset)
        prefix = key_prefix.encode()
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(records):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"read {len(records)} records from {topic} before timing out")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                if keep is not None:
                    records.extend(r for r in recs if keep(r))
                else:
                    records.extend(
                        r for r in recs if r.key is not None and r.key.startswith(prefix)
                    )
        return records
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap_servers: str, group_id: str, topic: str
) -> dict[int, int | None]:
    """What the broker holds as ``group_id``'s committed offset of each partition of ``topic``
    (``None``: nothing committed). Read without joining the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of ``topic``, fetching the metadata if the consumer has none yet."""
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return partitions


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of ``topic`` will get."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


def header_value(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    return next((v.decode() for k, v in record.headers or () if k == name), None)


async def dead_letters(
    bootstrap_servers: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    timeout: float = 30.0,
    since: Mapping[int, int] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The letters in ``pago.deadletter`` for the record at ``topic[partition]@offset``: waits
    for at least one (raises ``TimeoutError`` otherwise). ``since``: the letters topic's
    ``end_offsets`` before the record was sent — on the run's shared broker that topic holds
    every earlier test's letters (each new consumer group dead-letters the history again), and
    reading them all can outlast the wait."""
    from pago.common.deadletter import H_OFFSET, H_PARTITION, H_TOPIC
    from pago.common.topics import DEADLETTER

    def of_origin(r: ConsumerRecord[bytes, bytes]) -> bool:
        return (
            header_value(r, H_TOPIC),
            header_value(r, H_PARTITION),
            header_value(r, H_OFFSET),
        ) == (
            topic,
            str(partition),
            str(offset),
        )

    records = await read_topic(
        bootstrap_servers,
        DEADLETTER,
        until=lambda rs: any(of_origin(r) for r in rs),
        timeout=timeout,
        keep=lambda _: True,
        start=since,
    )
    return [r for r in records if of_origin(r)]


async def caught_up(
    bootstrap_servers: str, group_id: str, topic: str, *, timeout: float = 20.0
) -> dict[int, int | None]:
    """Wait until ``group_id``'s committed offset of every partition of ``topic`` is the
    partition's end offset (the group has processed and committed everything); return them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        committed = await committed_offsets(bootstrap_servers, group_id, topic)
        ends = await end_offsets(bootstrap_servers, topic)
        if all(
            committed[p] == end or (end == 0 and committed[p] is None) for p, end in ends.items()
        ):
            return committed
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{group_id} committed {committed}; the ends are {ends}")
        await asyncio.sleep(0.1)


def assert_committed_past(
    sent: Iterable[RecordMetadata], ends: Mapping[int, int], committed: Mapping[int, int | None]
) -> None:
    """The broker holds, per partition, the offset after the last of ``sent`` the group
    processed: exactly that where it was the partition's last record, beyond it where more
    followed."""
    last: dict[int, int] = {}
    for meta in sent:
        last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
    for partition, offset in last.items():
        if ends[partition] == offset + 1:  # nothing later in it: ours was the last processed
            assert committed[partition] == offset + 1
        else:
            assert (committed[partition] or 0) > offset + 1
