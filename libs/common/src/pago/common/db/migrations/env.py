"""Alembic environment: runs migrations over the async engine (asyncpg)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from pago.common.db.engine import create_engine
from pago.common.db.migrate import MIGRATION_LOCK_KEY
from pago.common.db.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    # Taken first, in the transaction the migrations then run in (Alembic joins an open one), so
    # the version table is read only once the lock is held and the lock goes with the commit.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url, pool_size=1, application_name="pago-migrate")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(str(config.get_main_option("sqlalchemy.url"))))


run()
