"""Read the dead-letter topic and put letters back on the topics they came from.

A replayed record goes to its original topic *and partition* with its original key, value and
headers (plus ``pago-replayed-from``: the letter's offset in ``pago.deadletter``), so it comes
after everything the consumer has read there and is processed like any other record. Every
consumer is idempotent, so replaying a record that was in fact processed, or replaying twice,
changes nothing; a record still bad is dead-lettered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from pago.common.deadletter import (
    H_AT,
    H_CONSUMER,
    H_DETAIL,
    H_OFFSET,
    H_PARTITION,
    H_PREFIX,
    H_REASON,
    H_TOPIC,
)
from pago.common.kafka import create_producer
from pago.common.topics import DEADLETTER

H_REPLAYED_FROM = "pago-replayed-from"


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the dead-letter topic, its ``pago-dlq-*`` headers parsed."""

    offset: int
    """Its offset in the dead-letter topic (the handle the replay command takes)."""
    topic: str
    partition: int
    origin_offset: int
    reason: str
    detail: str
    consumer: str
    at_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    """The original record's headers."""

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.origin_offset)

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> Letter:
        ours = {
            k: v.decode(errors="replace") for k, v in record.headers or () if k.startswith(H_PREFIX)
        }
        return cls(
            offset=record.offset,
            topic=ours.get(H_TOPIC, ""),
            partition=int(ours.get(H_PARTITION, "-1")),
            origin_offset=int(ours.get(H_OFFSET, "-1")),
            reason=ours.get(H_REASON, ""),
            detail=ours.get(H_DETAIL, ""),
            consumer=ours.get(H_CONSUMER, ""),
            at_ms=int(ours.get(H_AT, "0")),
            key=record.key,
            value=record.value,
            headers=tuple((k, v) for k, v in record.headers or () if not k.startswith(H_PREFIX)),
        )


async def read_letters(bootstrap_servers: str, *, topic: str = DEADLETTER) -> list[Letter]:
    """Every letter in the dead-letter topic up to its end when the call began, oldest first
    (a caller bounds the time with ``asyncio.timeout``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        enable_auto_commit=False,
        client_id="pago-dlq",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        letters: list[Letter] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for tp, records in batch.items():
                letters.extend(Letter.of(r) for r in records if r.offset < ends[tp])
        letters.sort(key=lambda letter: letter.offset)
        return letters
    finally:
        await consumer.stop()


def select(
    letters: Iterable[Letter],
    *,
    offsets: Sequence[int] = (),
    topic: str | None = None,
    reason: str | None = None,
) -> list[Letter]:
    """The letters matching every filter given (``offsets``: their dead-letter offsets)."""
    wanted = set(offsets)
    return [
        letter
        for letter in letters
        if (not wanted or letter.offset in wanted)
        and (topic is None or letter.topic == topic)
        and (reason is None or letter.reason == reason)
    ]


def distinct(letters: Iterable[Letter]) -> list[Letter]:
    """One letter per original record (the newest): a consumer that crashed between the
    letter's ack and its offset commit, or a watcher re-reading its compacted topic, writes
    the same record again; replaying it once is enough."""
    newest: dict[tuple[str, int, int], Letter] = {}
    for letter in letters:
        newest[letter.origin] = letter
    return sorted(newest.values(), key=lambda letter: letter.offset)


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: Letter
    partition: int
    offset: int
    """Where the record now is in its original topic."""


async def replay(
    bootstrap_servers: str,
    letters: Sequence[Letter],
    *,
    producer: AIOKafkaProducer | None = None,
) -> list[Replayed]:
    """Publish each letter's record back to its original topic and partition (acked)."""
    own = producer is None
    client = producer or create_producer(bootstrap_servers, client_id="pago-dlq-replay")
    if own:
        await client.start()
    try:
        futures = []
        for letter in letters:
            if not letter.topic or letter.partition < 0:
                raise ValueError(f"dead letter {letter.offset} does not name its origin")
            headers = [
                *((k, v) for k, v in letter.headers if k != H_REPLAYED_FROM),
                (H_REPLAYED_FROM, str(letter.offset).encode()),
            ]
            futures.append(
                await client.send(
                    letter.topic,
                    value=letter.value,
                    key=letter.key,
                    partition=letter.partition,
                    headers=headers,
                )
            )
        metadata = await asyncio.gather(*futures)
        return [
            Replayed(letter, int(m.partition), int(m.offset))
            for letter, m in zip(letters, metadata, strict=True)
        ]
    finally:
        if own:
            await client.stop()
