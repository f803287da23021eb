"""Every revision runs up and back down on a real Postgres, and head matches the schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.engine import create_engine
from pago.common.db.migrate import MIGRATION_LOCK_KEY, alembic_config
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


def _upgrade_process(db: Database) -> subprocess.Popen[str]:
    """``pago-migrate upgrade`` as the Job runs it: a process of its own (Alembic's context is
    one per process, so two runs in one process would not be two runs)."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "pago-migrate"), "upgrade"],
        env={**os.environ, "DATABASE_URL": db.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


async def _scalar(conn: AsyncConnection, sql: str) -> int:
    value = (await conn.execute(text(sql), {"key": MIGRATION_LOCK_KEY})).scalar_one()
    await conn.commit()  # the next read sees a new snapshot; the session lock stays held
    return int(value)


# A bigint key below 2**32 is classid 0, objid the key, objsubid 1.
WAITERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND classid = 0 AND objid = :key AND objsubid = 1"
)


def test_an_upgrade_waits_for_the_migration_lock_then_migrates(scratch_db: Database) -> None:
    async def scenario() -> tuple[int, str]:
        engine = create_engine(scratch_db.url, pool_size=1)
        try:
            async with engine.connect() as holder:
                await _scalar(holder, "SELECT count(*) FROM (SELECT pg_advisory_lock(:key)) l")
                process = _upgrade_process(scratch_db)
                while not await _scalar(holder, WAITERS):  # the upgrade queues behind us
                    assert process.poll() is None, f"the upgrade did not wait: {_finished(process)}"
                    await asyncio.sleep(0.05)
                tables = await _scalar(
                    holder,
                    "SELECT count(*) FROM information_schema.tables"
                    " WHERE table_schema = 'public' AND CAST(:key AS bigint) IS NOT NULL",
                )
                assert tables == 0, "the upgrade ran while another run held the lock"
                await _scalar(holder, "SELECT count(*) FROM (SELECT pg_advisory_unlock(:key)) u")
                return await asyncio.to_thread(_finished, process)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario())[0] == 0
    assert {t.name for t in metadata.sorted_tables} <= _tables(scratch_db)


def test_concurrent_upgrades_serialise_and_both_succeed(scratch_db: Database) -> None:
    runs = [_upgrade_process(scratch_db) for _ in range(2)]
    results = [_finished(run) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    assert {t.name for t in metadata.sorted_tables} <= _tables(scratch_db)
