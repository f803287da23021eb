"""Read what really reached the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    key_prefix: str = "",
    timeout: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning (every partition) until ``until(records)`` holds.

    Only records whose key starts with ``key_prefix`` are kept. Raises ``TimeoutError`` with what
    was read so far, so a failing test says how far it got.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        prefix = key_prefix.encode()
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(records):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"read {len(records)} records from {topic} before timing out")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(r for r in recs if r.key is not None and r.key.startswith(prefix))
        return records
    finally:
        await consumer.stop()
