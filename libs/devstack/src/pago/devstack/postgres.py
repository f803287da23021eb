"""Postgres for dev and tests: ``DATABASE_URL`` when set, else an embedded server from ``pgserver``.

``pgserver`` ships PostgreSQL 16 binaries and starts a server on a unix socket inside (or, for
long paths, beside) its data dir. Its own cleanup only stops the server when the last handle it
knows of goes away, and it keeps that list on disk: a handle left there by a killed process keeps
the server running forever. ``PostgresServer.close()`` therefore verifies the postmaster is gone
and stops it with ``pg_ctl`` (then signals) if not.

As root, pgserver runs postgres as a user ``pgserver``, which must be able to traverse every
parent of the data dir; pgserver chmods them o+rx when it starts. pytest, at every session
start, chmods ``/tmp/pytest-of-root`` back to 0700, so a server whose data dir is under it breaks
when any other pytest session starts. Such data dirs are therefore moved to a dir of their own
under the system temp dir (and deleted at close: they were throwaway anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import psutil  # type: ignore[import-untyped, unused-ignore]

from pago.devstack._support import (
    DevStackError,
    environ,
    process_alive,
    run_coroutine_sync,
    wait_until,
)

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer as _PgServer

log = logging.getLogger(__name__)

ASYNC_SCHEME = "postgresql+asyncpg"
_START_ATTEMPTS = 2
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCHEMES = (
    "postgresql",
    "postgres",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
)


def to_async_url(url: str) -> str:
    """``postgresql://…`` (any driver suffix) → ``postgresql+asyncpg://…`` for SQLAlchemy."""
    return _with_scheme(url, ASYNC_SCHEME)


def to_libpq_url(url: str) -> str:
    """Any SQLAlchemy Postgres URL → plain ``postgresql://…`` for libpq, psql and asyncpg."""
    return _with_scheme(url, "postgresql")


def _with_scheme(url: str, scheme: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep or head not in _SCHEMES:
        raise DevStackError(f"not a Postgres URL: {url.split('@')[-1]}")
    return f"{scheme}://{rest}"


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name`` (query, e.g. ``?host=``, kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name)))


@dataclass(frozen=True, slots=True)
class Database:
    """One database on the server, in both URL forms."""

    name: str
    url: str
    """``postgresql+asyncpg://…`` (SQLAlchemy async engine, alembic)."""
    libpq_url: str
    """``postgresql://…`` (asyncpg.connect, psql)."""


@dataclass
class PostgresServer:
    """A running Postgres: ``url`` (SQLAlchemy asyncpg form) and ``libpq_url`` for its default db.

    For the embedded server the user is ``postgres`` with trust auth over a unix socket, e.g.
    ``postgresql+asyncpg://postgres@/postgres?host=/work/main/.devstack/pgdata``.
    """

    libpq_url: str
    external: bool
    datadir: Path | None = None
    """Where the cluster lives (see the module doc for when this is not the path given)."""
    _server: _PgServer | None = field(default=None, repr=False)
    _throwaway: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return to_async_url(self.libpq_url)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (embedded only)."""
        if self._server is None:
            return None
        return self._server.get_pid()

    @classmethod
    def start(cls, datadir: Path | str, *, env: Mapping[str, str] | None = None) -> PostgresServer:
        """Use ``DATABASE_URL`` if set; otherwise start (or reuse) the server in ``datadir``.

        A ``datadir`` that already holds a cluster keeps its data: ``make dev`` restarts with
        yesterday's sessions. Tests pass a fresh tmp dir.
        """
        external = environ(env).get("DATABASE_URL", "").strip()
        if external:
            return cls(libpq_url=to_libpq_url(external), external=True)
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers,
            # CI); the /tmp fallback it picks is fine for a dev server's lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from pgserver.postgres_server import PostgresServer as PgServer
            from pgserver.postgres_server import get_server  # lazy: embedded path only

        asked = Path(datadir).expanduser().resolve()
        path = effective_datadir(asked)
        throwaway = path != asked
        path.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(path)
        fresh = not (path / "PG_VERSION").exists()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                # cleanup_mode="stop": pgserver's atexit hook stops the server if close()
                # never runs.
                server = get_server(path, cleanup_mode="stop")
                break
            except (subprocess.SubprocessError, OSError, AssertionError) as exc:
                # pgserver registers the handle before starting; a failed one must not be
                # handed out by the next get_server().
                PgServer._instances.pop(path, None)
                if attempt == _START_ATTEMPTS:
                    raise DevStackError(
                        f"embedded Postgres did not start in {path}: {exc}"
                    ) from exc
                # A failed initdb leaves a half-made cluster the next initdb refuses; only a
                # dir that held no cluster before is wiped, never an existing dev database.
                log.warning("embedded Postgres failed to start (%s); retrying once", exc)
                if fresh:
                    shutil.rmtree(path, ignore_errors=True)
        # pgserver's URI is postgresql://postgres:@/postgres?host=<socket dir>; the empty
        # password is noise, and asyncpg accepts the rest as a DSN.
        uri = server.get_uri().replace("postgres:@", "postgres@", 1)
        self = cls(
            libpq_url=uri, external=False, datadir=path, _server=server, _throwaway=throwaway
        )
        log.info("embedded Postgres up (pid %s) at %s", self.pid, uri)
        return self

    # -- databases -----------------------------------------------------------------------

    def database(self, name: str) -> Database:
        """URLs for database ``name`` on this server (it need not exist yet)."""
        libpq = with_database(self.libpq_url, name)
        return Database(name=name, url=to_async_url(libpq), libpq_url=libpq)

    def create_database(self, name: str, *, exist_ok: bool = False) -> Database:
        """``CREATE DATABASE name`` (names are ``[a-z_][a-z0-9_]*``, ≤ 63 chars)."""
        _check_name(name)

        async def create() -> None:
            conn = await asyncpg.connect(self.libpq_url)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
                if exists and not exist_ok:
                    raise DevStackError(f"database {name} already exists")
                if not exists:
                    # Identifiers cannot be bound parameters; the name is validated above.
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        run_coroutine_sync(create)
        return self.database(name)

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS name WITH (FORCE)`` — disconnects its sessions first."""
        _check_name(name)

        async def drop() -> None:
            conn = await asyncpg.connect(self.libpq_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        run_coroutine_sync(drop)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the embedded server and make sure no postgres process is left. Idempotent."""
        server, self._server = self._server, None
        if server is None or self.datadir is None:
            return
        postmaster = _postmaster(server)
        try:
            server.cleanup()
        except Exception:  # pgserver's cleanup asserts and logs; we verify below regardless
            log.exception("pgserver cleanup failed; stopping the server directly")
        if postmaster is not None and process_alive(postmaster):
            _pg_ctl_stop(server, self.datadir)
        if postmaster is not None and process_alive(postmaster):
            _signal_stop(postmaster)
        # pgserver caches handles per data dir; a dropped one must not be handed out again.
        type(server)._instances.pop(self.datadir, None)
        if self._throwaway:
            shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")


def effective_datadir(path: Path | str) -> Path:
    """Where a cluster asked for at ``path`` lives: ``path`` itself, except as root under a
    ``pytest-of-*`` dir, where it gets a throwaway dir of its own (see the module doc)."""
    path = Path(path).expanduser().resolve()
    if os.geteuid() != 0 or not any(p.name.startswith("pytest-of-") for p in path.parents):
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pago-devstack-pg-{digest}"


def _forget_dead_handles(datadir: Path) -> None:
    """Drop pids of dead processes from pgserver's on-disk handle list.

    pgserver stops the server only when the exiting process is the last live handle; a pid
    left there by a killed process would otherwise keep every later server running.
    """
    handles = datadir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _postmaster(server: _PgServer) -> psutil.Process | None:
    try:
        pid = server.get_pid()
        return psutil.Process(pid) if pid is not None else None
    except (psutil.NoSuchProcess, AssertionError):
        return None


def _pg_ctl_stop(server: _PgServer, datadir: Path) -> None:
    from pgserver._commands import POSTGRES_BIN_PATH

    # -m fast: roll back open transactions and disconnect clients rather than wait on them.
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(datadir), "-w", "-t", "10", "-m", "fast"]
    try:
        subprocess.run(
            [*cmd, "stop"],
            check=True,
            capture_output=True,
            timeout=15,
            user=server.system_user,  # as root, pgserver runs postgres as user "pgserver"
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.warning("pg_ctl stop failed (%s); killing the postmaster", exc)


def _signal_stop(postmaster: psutil.Process) -> None:
    """Stop a postmaster pg_ctl could not reach: SIGINT (fast shutdown), then SIGKILL all.

    pg_ctl fails when the ``pgserver`` user can no longer traverse to the data dir (see
    ``start``); signals need no path.
    """
    with contextlib.suppress(psutil.NoSuchProcess):
        postmaster.send_signal(signal.SIGINT)
    # Not psutil's wait(): for a non-child it waits for the pid to vanish, and a stopped
    # postmaster may stay a zombie until PID 1 reaps it.
    with contextlib.suppress(DevStackError):
        wait_until(lambda: not process_alive(postmaster), 10, "postgres fast shutdown", 0.05)
    if not process_alive(postmaster):
        return
    try:
        victims = [*postmaster.children(recursive=True), postmaster]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    psutil.wait_procs(victims, timeout=5)
