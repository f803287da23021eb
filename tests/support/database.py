"""Emptying the run's database between tests."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import metadata

DEADLOCK = "40P01"
ATTEMPTS = 5


async def empty_database(engine: AsyncEngine) -> None:
    """TRUNCATE every table (identities restarted).

    A service the previous test stopped may still be committing its last batch while this runs:
    its transaction holds a shared lock on one table and waits for another, which the TRUNCATE
    (locking all of them, in order) may already hold, and Postgres breaks the cycle by failing
    one of the two. When the TRUNCATE is the one chosen, the other transaction goes on and ends,
    so the next attempt gets every lock.
    """
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if sqlstate != DEADLOCK or attempt == ATTEMPTS:
                raise
        else:
            return
