"""The Postgres half of ``Idempotency-Key``: records that outlive Redis.

Redis answers a retry quickly and holds the in-flight lock; this record is what makes a retry
safe when Redis lost the key (restart, failover, eviction, a lapsed lock). The middleware
builds a :class:`DurableClaim` per keyed request; the request's transaction takes it as its
first statement and hands itself over when the endpoint returned, and the middleware writes
the response into the claimed row and commits — the record and the work it describes commit
together or not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.idempotency import repository
from pago.api.idempotency.repository import RecordScope, StoredRecord

log = logging.getLogger(__name__)

REDACTED = "[redacted: shown once; rotate the secret if it was lost]"
"""What a replay shows instead of a webhook signing secret (never stored in plaintext)."""

PURGE_BATCH = 1000


class OpenTransaction(Protocol):
    async def connection(self) -> AsyncConnection: ...

    async def finish(self, exc: BaseException | None) -> None: ...


class StoredReplay(Exception):
    """A concurrent request with the same key committed first: answer its record instead.

    ``record`` is ``None`` in the one case where the winner's row was seen but not its
    response (it cannot happen with committed claims; answered as ``request_in_progress``).
    """

    def __init__(self, record: StoredRecord | None) -> None:
        super().__init__("idempotency key already recorded")
        self.record = record


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DurableClaim:
    scope: RecordScope
    fingerprint: str
    ttl: timedelta
    claimed: bool = False
    handed_over: OpenTransaction | None = field(default=None)
    """The request's transaction, still open after the endpoint returned (the middleware
    completes the record in it and commits)."""

    async def take(self, conn: AsyncConnection) -> None:
        """Claim the key in ``conn``'s fresh transaction, or raise :class:`StoredReplay`."""
        now = _now()
        if await repository.claim(conn, self.scope, self.fingerprint, now + self.ttl, now):
            self.claimed = True
            return
        raise StoredReplay(await repository.find(conn, self.scope, now))

    async def complete(self, conn: AsyncConnection, status: int, ctype: str, body: bytes) -> None:
        await repository.complete(conn, self.scope, status, ctype, body)

    async def drop(self, conn: AsyncConnection) -> None:
        await repository.drop(conn, self.scope)


class DurableStore:
    """Reads and writes records outside a request's transaction."""

    def __init__(self, engine: AsyncEngine, *, ttl_seconds: int) -> None:
        self._engine = engine
        self.ttl = timedelta(seconds=ttl_seconds)

    def claim(self, scope: RecordScope, fingerprint: str) -> DurableClaim:
        return DurableClaim(scope, fingerprint, self.ttl)

    async def find(self, scope: RecordScope) -> StoredRecord | None:
        async with self._engine.connect() as conn:
            return await repository.find(conn, scope, _now())

    async def store(
        self, scope: RecordScope, fingerprint: str, status: int, ctype: str, body: bytes
    ) -> None:
        now = _now()
        async with self._engine.begin() as conn:
            await repository.store(
                conn, scope, fingerprint, status, ctype, body, now + self.ttl, now
            )

    async def purge(self) -> int:
        """Delete every expired record, a batch per transaction; how many went."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                gone = await repository.purge(conn, _now(), PURGE_BATCH)
            total += gone
            if gone < PURGE_BATCH:
                return total

    async def purge_forever(self, interval_seconds: float) -> None:
        """The api's background cleanup (replicas may overlap: ``SKIP LOCKED`` splits it)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                gone = await self.purge()
            except Exception:
                log.warning("could not purge expired idempotency records", exc_info=True)
            else:
                if gone:
                    log.info("purged %d expired idempotency records", gone)


def redact(body: bytes, fields: tuple[str, ...]) -> bytes:
    """``body`` (a JSON object) with the top-level ``fields`` replaced by :data:`REDACTED`."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body
    for name in fields:
        if name in document:
            document[name] = REDACTED
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
