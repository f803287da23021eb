"""A TCP front for the test Postgres that can be cut and restored: a real outage, not a mock.

``cut()`` closes every connection through it and refuses new ones (the server's port is closed,
as when Postgres restarts or the network drops); ``restore()`` accepts again. Services under
test get ``url`` instead of the database's own URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pago.devstack.postgres import Database


class PostgresProxy:
    def __init__(self, database: Database) -> None:
        parts = urlsplit(database.url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self._target_unix = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir else None
        self._target_tcp = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._port = 0
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The database's SQLAlchemy URL, through this proxy."""
        user = self._parts.username or "postgres"
        if self._parts.password:
            user += f":{self._parts.password}"
        return urlunsplit(
            (self._parts.scheme, f"{user}@127.0.0.1:{self._port}", self._parts.path, "", "")
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._target_unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self._target_unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self._target_tcp)
        self._pipes.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
