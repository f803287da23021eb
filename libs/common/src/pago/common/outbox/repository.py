"""SQL of the outbox: enqueue inside the caller's transaction; claim and mark for the relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import outbox
from pago.common.outbox.message import OutboxMessage


async def enqueue(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    """Add messages to the outbox in the caller's open transaction (commits with the change)."""
    if not messages:
        return
    await conn.execute(
        insert(outbox),
        [
            {"topic": m.topic, "key": m.key, "value": m.value, "headers": m.headers}
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


# Lock a batch of the oldest unsent rows, skipping rows another relay holds. A row is published
# only if no older unsent row of the same key sits outside this batch (in another relay's
# batch, or not yet visible): that keeps per-key order with any number of relays.
_CLAIM = text(
    """
    WITH claimed AS MATERIALIZED (
        SELECT id, topic, key, value, headers FROM outbox
        WHERE sent_at IS NULL
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    SELECT c.id, c.topic, c.key, c.value, c.headers FROM claimed c
    WHERE NOT EXISTS (
        SELECT 1 FROM outbox o
        WHERE o.key = c.key AND o.topic = c.topic AND o.sent_at IS NULL AND o.id < c.id
          AND o.id NOT IN (SELECT id FROM claimed)
    )
    ORDER BY c.id
    """
)


async def claim_batch(conn: AsyncConnection, limit: int) -> list[PendingRow]:
    result = await conn.execute(_CLAIM, {"limit": limit})
    return [PendingRow(r.id, r.topic, r.key, r.value, r.headers) for r in result]


async def mark_sent(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=func.now()))


async def backlog(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.count()).where(outbox.c.sent_at.is_(None)))
    return int(result.scalar_one())


async def purge_sent(conn: AsyncConnection, older_than_seconds: int) -> int:
    """Delete rows sent more than ``older_than_seconds`` ago; returns how many went."""
    result: Any = await conn.execute(
        text("DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => :s)"),
        {"s": older_than_seconds},
    )
    return int(result.rowcount)
