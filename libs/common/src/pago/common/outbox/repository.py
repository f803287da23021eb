"""SQL of the outbox: enqueue inside the caller's transaction; claim and delete for the relay.

Rows are spread over ``SHARDS`` by a hash of their key. A relay works a shard only while it
holds that shard's transaction-scoped advisory lock, and takes its rows in id order, so all
events of one key leave in the order they were written however many relays run; a relay that
dies drops its locks with its connection and another takes the shard over.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import outbox
from pago.common.outbox.message import OutboxMessage

SHARDS = 64
ADVISORY_NAMESPACE = 0x6F7574  # "out": keeps our advisory locks apart from anyone else's


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode()) % SHARDS


async def enqueue(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    """Add messages to the outbox in the caller's open transaction (commits with the change)."""
    if not messages:
        return
    await conn.execute(
        insert(outbox),
        [
            {
                "shard": shard_of(m.key),
                "topic": m.topic,
                "key": m.key,
                "value": m.value,
                "headers": m.headers,
            }
            for m in messages
        ],
    )


@dataclass(frozen=True, slots=True)
class PendingRow:
    id: int
    topic: str
    key: str
    value: bytes | None
    headers: dict[str, str]


_LOCK_SHARDS = text(
    "SELECT s FROM unnest(CAST(:shards AS int[])) AS s WHERE pg_try_advisory_xact_lock(:ns, s)"
)


async def lock_shards(conn: AsyncConnection, shards: Sequence[int]) -> list[int]:
    """Take the shards no other relay holds, until this transaction ends."""
    result = await conn.execute(_LOCK_SHARDS, {"shards": list(shards), "ns": ADVISORY_NAMESPACE})
    return [int(row[0]) for row in result]


async def claim_batch(conn: AsyncConnection, shards: Sequence[int], limit: int) -> list[PendingRow]:
    """The oldest ``limit`` rows of ``shards`` (which this transaction must hold), in id order."""
    query = (
        select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.headers)
        .where(outbox.c.shard.in_(shards))
        .order_by(outbox.c.id)
        .limit(limit)
    )
    result = await conn.execute(query)
    return [PendingRow(r.id, r.topic, r.key, r.value, r.headers) for r in result]


async def mark_sent(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """The broker acknowledged these rows: they leave the outbox."""
    await conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))


async def backlog(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.count()).select_from(outbox))
    return int(result.scalar_one())
