"""Every revision runs up and back down on a real Postgres, and head matches the schema."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from pago.common.db.engine import create_engine
from pago.common.db.migrate import alembic_config
from pago.common.db.schema import metadata
from pago.devstack.postgres import Database, PostgresServer


@pytest.fixture
def scratch_db(pg_server: PostgresServer) -> Iterator[Database]:
    name = f"pago_migrations_{uuid.uuid4().hex[:8]}"
    db = pg_server.create_database(name)
    try:
        yield db
    finally:
        pg_server.drop_database(name)


def _tables(db: Database) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(db.url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_every_revision_goes_up_and_down(scratch_db: Database) -> None:
    config = alembic_config(scratch_db.url)
    revisions = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()]
    assert revisions, "no migrations found"
    for revision in reversed(revisions):  # oldest first
        command.upgrade(config, revision)
    assert {t.name for t in metadata.sorted_tables} <= _tables(scratch_db)
    for revision in revisions[1:]:
        command.downgrade(config, revision)
    command.downgrade(config, "base")
    assert _tables(scratch_db) <= {"alembic_version"}
    command.upgrade(config, "head")  # and up again from nothing


def test_head_matches_the_schema_repositories_use(scratch_db: Database) -> None:
    command.upgrade(alembic_config(scratch_db.url), "head")

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async def compare() -> list[object]:
        engine = create_engine(scratch_db.url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    assert asyncio.run(compare()) == []
