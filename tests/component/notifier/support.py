"""Helpers of the notifier's consumer tests: Kafka replaced by a recording port, dead letters
collected as the handler hands them over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import webhook_deliveries
from pago.common.deadletter import DeadLetter


@dataclass
class RecordingPort:
    engine: AsyncEngine
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    rewinds: list[dict[TopicPartition, int]] = field(default_factory=list)
    stored_at_commit: list[int] = field(default_factory=list)
    rewind_fails: bool = False

    async def fetch_more(self, max_records: int, timeout_ms: int) -> list[ConsumerRecord[Any, Any]]:
        return []  # the notifier takes the poll's batch as it is

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.stored_at_commit.append(await count(self.engine))
        self.commits.append(dict(offsets))

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.rewind_fails:
            raise RuntimeError("the consumer cannot seek")
        self.rewinds.append(dict(offsets))


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(webhook_deliveries))).scalar_one()
        )


class Letters:
    """Dead letters as the handler hands them over (the Kafka side is tested with the app)."""

    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []
        self.fail = False

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if self.fail:
            raise KafkaConnectionError("the broker is unreachable")
        self.sent.extend(letters)
