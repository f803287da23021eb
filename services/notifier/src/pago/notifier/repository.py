"""SQL of the notifier: fan-out of events into deliveries, and the delivery queue.

The queue is ``webhook_deliveries`` itself (``status = 'pending'``, due at ``next_attempt_at``,
over the partial index ``ix_webhook_deliveries_due``). A worker *claims* due rows with
``FOR UPDATE SKIP LOCKED`` and, in the same short transaction, counts the attempt and pushes
``next_attempt_at`` one lease ahead: replicas never claim the same row, no row lock is held
while the HTTP request runs, and a worker that dies mid-request leaves the row due again when
the lease runs out. The outcome is written with a guard on ``attempts`` so a worker whose lease
lapsed cannot overwrite a newer attempt's result.

Times are the database's ``now()``, so replicas with skewed clocks agree on what is due.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import webhook_deliveries, webhook_endpoints
from pago.common.enums import DeliveryStatus, Mode

d = webhook_deliveries
e = webhook_endpoints

INSERT_CHUNK = 1000
"""Rows per INSERT: 7 parameters each stays far below Postgres' 32,767 per statement."""


def delivery_id() -> str:
    return f"wd_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """An enabled endpoint, with what fan-out needs of it."""

    id: str
    merchant_id: str
    mode: Mode
    enabled_events: frozenset[str]
    created_at: datetime


async def subscribers(
    conn: AsyncConnection, owners: Iterable[tuple[str, Mode]]
) -> list[Subscriber]:
    """Enabled, undeleted endpoints of these ``(merchant_id, mode)`` pairs."""
    pairs = sorted({(merchant, mode.value) for merchant, mode in owners})
    if not pairs:
        return []
    query = select(e.c.id, e.c.merchant_id, e.c.mode, e.c.enabled_events, e.c.created_at).where(
        tuple_(e.c.merchant_id, e.c.mode).in_(pairs),
        e.c.disabled_at.is_(None),
        e.c.deleted_at.is_(None),
    )
    return [
        Subscriber(r.id, r.merchant_id, Mode(r.mode), frozenset(r.enabled_events), r.created_at)
        for r in await conn.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class NewDelivery:
    endpoint_id: str
    event_id: str
    event_type: str
    payload: bytes


async def insert_deliveries(conn: AsyncConnection, rows: Sequence[NewDelivery]) -> int:
    """Queue deliveries due now; a row whose ``(endpoint, event)`` exists is skipped (a Kafka
    redelivery of an event already fanned out). Returns how many were new."""
    created = 0
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        statement = (
            insert(d)
            .values(
                [
                    {
                        "id": delivery_id(),
                        "endpoint_id": row.endpoint_id,
                        "event_id": row.event_id,
                        "event_type": row.event_type,
                        "payload": row.payload,
                        "status": DeliveryStatus.PENDING.value,
                        "next_attempt_at": func.now(),
                    }
                    for row in chunk
                ]
            )
            .on_conflict_do_nothing(constraint="uq_webhook_deliveries_once")
            .returning(d.c.id)
        )
        created += len((await conn.execute(statement)).all())
    return created


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker owns until its lease runs out."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    payload: bytes
    attempt: int
    """1 for the first attempt; the outcome is written only while ``attempts`` still equals it."""
    url: str
    mode: Mode
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime

    def secrets(self, now: datetime) -> list[str]:
        """The current secret, then the previous one while its overlap lasts."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def __repr__(self) -> str:  # never print the secrets
        return f"Claimed(id={self.id!r}, endpoint_id={self.endpoint_id!r}, attempt={self.attempt})"


_DUE = text(
    """
    SELECT d.id, d.endpoint_id
    FROM webhook_deliveries AS d
    JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
    WHERE d.status = 'pending'
      AND d.next_attempt_at <= now()
      AND e.disabled_at IS NULL
      AND e.deleted_at IS NULL
      AND d.endpoint_id <> ALL(CAST(:busy AS text[]))
    ORDER BY d.next_attempt_at
    LIMIT :scan
    FOR UPDATE OF d SKIP LOCKED
    """
)

_TAKE = text(
    """
    UPDATE webhook_deliveries AS d
    SET attempts = d.attempts + 1,
        next_attempt_at = now() + make_interval(secs => :lease),
        last_attempt_at = now()
    FROM webhook_endpoints AS e
    WHERE e.id = d.endpoint_id AND d.id = ANY(CAST(:ids AS text[]))
    RETURNING d.id, d.endpoint_id, d.event_id, d.event_type, d.payload, d.attempts,
              d.created_at, e.url, e.mode, e.secret, e.previous_secret,
              e.previous_secret_expires_at
    """
)


async def claim_due(
    conn: AsyncConnection,
    *,
    slots: int,
    per_endpoint: dict[str, int],
    endpoint_limit: int,
    lease: float,
) -> list[Claimed]:
    """Claim up to ``slots`` due deliveries, at most ``endpoint_limit`` in flight per endpoint
    counting the ``per_endpoint`` ones this worker already has in flight.

    Scans up to ten times ``slots`` due rows so that one endpoint's backlog at the head of the
    queue does not hide the others behind it; the rows scanned but not taken are unlocked
    unchanged when the transaction ends.
    """
    busy = [endpoint for endpoint, n in per_endpoint.items() if n >= endpoint_limit]
    due = (await conn.execute(_DUE, {"busy": busy, "scan": slots * 10})).all()
    taken: list[str] = []
    load = dict(per_endpoint)
    for row in due:
        if len(taken) >= slots:
            break
        if load.get(row.endpoint_id, 0) < endpoint_limit:
            load[row.endpoint_id] = load.get(row.endpoint_id, 0) + 1
            taken.append(row.id)
    if not taken:
        return []
    rows = await conn.execute(_TAKE, {"ids": taken, "lease": lease})
    return [
        Claimed(
            id=r.id,
            endpoint_id=r.endpoint_id,
            event_id=r.event_id,
            event_type=r.event_type,
            payload=bytes(r.payload),
            attempt=r.attempts,
            url=r.url,
            mode=Mode(r.mode),
            secret=r.secret,
            previous_secret=r.previous_secret,
            previous_secret_expires_at=r.previous_secret_expires_at,
            created_at=r.created_at,
        )
        for r in rows
    ]


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    """Exhausted the schedule."""
    GONE = "gone"
    """The endpoint answered 410: this delivery fails and the endpoint is disabled."""


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: str
    endpoint_id: str
    attempt: int
    verdict: Verdict
    status_code: int | None
    error: str | None
    retry_in: float | None = None
    """Seconds until the next attempt (``RETRY`` only)."""


_RECORD = text(
    """
    UPDATE webhook_deliveries AS d
    SET status = o.status,
        last_status_code = o.status_code,
        last_error = o.error,
        delivered_at = CASE WHEN o.status = 'succeeded' THEN now() END,
        next_attempt_at = CASE
            WHEN o.status = 'pending' THEN now() + make_interval(secs => o.delay)
        END
    FROM unnest(
        CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:statuses AS text[]),
        CAST(:codes AS int[]), CAST(:errors AS text[]), CAST(:delays AS float8[])
    ) AS o(id, attempt, status, status_code, error, delay)
    WHERE d.id = o.id AND d.attempts = o.attempt AND d.status = 'pending'
    RETURNING d.id
    """
)

_STATUS = {
    Verdict.SUCCEEDED: DeliveryStatus.SUCCEEDED,
    Verdict.RETRY: DeliveryStatus.PENDING,
    Verdict.FAILED: DeliveryStatus.FAILED,
    Verdict.GONE: DeliveryStatus.FAILED,
}


async def record_outcomes(conn: AsyncConnection, outcomes: Sequence[Outcome]) -> int:
    """Write what the attempts came to, in one statement; returns how many rows were still
    this worker's (a lapsed lease or a manual redelivery since the claim makes it fewer)."""
    if not outcomes:
        return 0
    rows = await conn.execute(
        _RECORD,
        {
            "ids": [o.delivery_id for o in outcomes],
            "attempts": [o.attempt for o in outcomes],
            "statuses": [_STATUS[o.verdict].value for o in outcomes],
            "codes": [o.status_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "delays": [o.retry_in or 0.0 for o in outcomes],
        },
    )
    written = len(rows.all())
    gone = sorted({o.endpoint_id for o in outcomes if o.verdict is Verdict.GONE})
    if gone:
        await conn.execute(
            update(e)
            .where(e.c.id.in_(gone), e.c.disabled_at.is_(None))
            .values(disabled_at=func.now(), disabled_reason="the endpoint answered 410 Gone")
        )
        await pause_deliveries(conn, gone)
    return written


async def pause_deliveries(conn: AsyncConnection, endpoint_ids: Sequence[str]) -> None:
    """Take the pending deliveries of disabled endpoints off the schedule (``next_attempt_at``
    NULL) until the endpoint is enabled again: left due, they would sit at the head of the due
    index and every claim would walk past them."""
    await conn.execute(
        update(d)
        .where(d.c.endpoint_id.in_(endpoint_ids), d.c.status == DeliveryStatus.PENDING.value)
        .values(next_attempt_at=None)
    )


async def due_backlog(conn: AsyncConnection) -> int:
    """Pending deliveries already due (sampled for a gauge)."""
    query = (
        select(func.count())
        .select_from(d)
        .where(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= func.now())
    )
    return int((await conn.execute(query)).scalar_one())
