"""Embedded Postgres (pgserver) or DATABASE_URL, reached by asyncpg and SQLAlchemy."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pago.devstack.postgres import (
    PostgresServer,
    effective_datadir,
    to_async_url,
    to_libpq_url,
)


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer.start(tmp_path_factory.mktemp("devstack-pg") / "data")
    try:
        yield server
    finally:
        server.close()


async def test_asyncpg_reaches_the_server(pg: PostgresServer) -> None:
    conn = await asyncpg.connect(pg.libpq_url)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert int(await conn.fetchval("SHOW server_version_num")) >= 150000
    finally:
        await conn.close()


async def test_created_database_works_in_both_url_forms(pg: PostgresServer) -> None:
    name = f"devstack_{uuid.uuid4().hex[:8]}"
    db = pg.create_database(name)
    try:
        assert db.url.startswith("postgresql+asyncpg://")
        assert db.libpq_url.startswith("postgresql://")
        conn = await asyncpg.connect(db.libpq_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
        engine = create_async_engine(db.url)
        try:
            async with engine.connect() as sa_conn:
                assert (await sa_conn.execute(text("SELECT current_database()"))).scalar() == name
        finally:
            await engine.dispose()
        assert pg.create_database(name, exist_ok=True).name == name
    finally:
        pg.drop_database(name)


def test_database_names_are_validated(pg: PostgresServer) -> None:
    with pytest.raises(ValueError, match="database name"):
        pg.create_database('x"; DROP DATABASE postgres; --')


@pytest.mark.parametrize(
    ("given", "async_url", "libpq_url"),
    [
        ("postgresql://u:p@db:5432/pago", "postgresql+asyncpg://u:p@db:5432/pago", None),
        ("postgres://u@db/pago", "postgresql+asyncpg://u@db/pago", "postgresql://u@db/pago"),
        ("postgresql+asyncpg://u@/pago?host=/s", None, "postgresql://u@/pago?host=/s"),
    ],
)
def test_url_normalization(given: str, async_url: str | None, libpq_url: str | None) -> None:
    if async_url is not None:
        assert to_async_url(given) == async_url
    if libpq_url is not None:
        assert to_libpq_url(given) == libpq_url


def test_database_url_env_starts_no_server(tmp_path: Path) -> None:
    server = PostgresServer.start(
        tmp_path / "unused", env={"DATABASE_URL": "postgresql://pago:pw@db.internal:5432/pago"}
    )
    assert server.external
    assert server.pid is None
    assert server.url == "postgresql+asyncpg://pago:pw@db.internal:5432/pago"
    assert server.database("other").libpq_url == "postgresql://pago:pw@db.internal:5432/other"
    assert not (tmp_path / "unused").exists()
    server.close()


def test_close_stops_the_postmaster(tmp_path: Path) -> None:
    """pgserver may leave its server running after Python exits; close() must not."""
    server = PostgresServer.start(tmp_path / "data", env={})
    pid, datadir = server.pid, server.datadir
    assert pid is not None
    assert datadir == effective_datadir(tmp_path / "data")
    server.close()
    server.close()  # idempotent
    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # PID 1 reaps it later
    if datadir != tmp_path / "data":  # a throwaway dir outside pytest's tmp (as root)
        assert not datadir.exists()
