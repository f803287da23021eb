"""SQL of card sessions: sessions, attempts, routing decisions, the provider webhook inbox,
the merchants' routing rules.

Every read a merchant can reach is scoped to ``merchant_id`` and ``mode``; webhook and job
statements find rows by the provider's reference or by deadline and lock what they change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import (
    card_attempts,
    card_routing_decisions,
    card_routing_rules,
    card_sessions,
    card_webhook_inbox,
)
from pago.common.enums import CardProvider, CardSessionStatus, Mode

cs = card_sessions
ca = card_attempts
rd = card_routing_decisions
ib = card_webhook_inbox
rr = card_routing_rules


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    merchant_id: str
    mode: Mode
    order_reference: str
    status: CardSessionStatus
    currency: str
    exponent: int
    total: int
    shipping: int
    tax: int
    billing_country: str
    provider: CardProvider | None
    provider_reference: str | None
    checkout_url: str | None
    live_seq: int | None
    score: Decimal | None
    order_data: dict[str, Any]
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


_SESSION_COLUMNS = (
    cs.c.id,
    cs.c.merchant_id,
    cs.c.mode,
    cs.c.order_reference,
    cs.c.status,
    cs.c.currency,
    cs.c.exponent,
    cs.c.total,
    cs.c.shipping,
    cs.c.tax,
    cs.c.billing_country,
    cs.c.provider,
    cs.c.provider_reference,
    cs.c.checkout_url,
    cs.c.live_seq,
    cs.c.score,
    cs.c.order_data,
    cs.c.expires_at,
    cs.c.created_at,
    cs.c.updated_at,
)


def _session(row: Sequence[Any]) -> SessionRow:
    (sid, merchant, mode, ref, status, cur, exp, total, ship, tax, country, provider, pref,
     url, seq, score, order, expires, created, updated) = row  # fmt: skip
    return SessionRow(
        str(sid), merchant, Mode(mode), ref, CardSessionStatus(status), cur, int(exp),
        int(total), int(ship), int(tax), country,
        CardProvider(provider) if provider else None, pref, url, seq, score, order,
        expires, created, updated,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AttemptRow:
    session_id: str
    seq: int
    provider: CardProvider
    idempotency_key: str
    status: str
    reference: str | None
    checkout_url: str | None
    error: str | None
    latency_ms: int | None
    created_at: datetime


_ATTEMPT_COLUMNS = (
    ca.c.session_id,
    ca.c.seq,
    ca.c.provider,
    ca.c.idempotency_key,
    ca.c.status,
    ca.c.reference,
    ca.c.checkout_url,
    ca.c.error,
    ca.c.latency_ms,
    ca.c.created_at,
)


def _attempt(row: Sequence[Any]) -> AttemptRow:
    sid, seq, provider, key, status, ref, url, error, latency, created = row
    return AttemptRow(
        str(sid), int(seq), CardProvider(provider), key, status, ref, url, error, latency, created
    )


@dataclass(frozen=True, slots=True)
class DecisionRow:
    ranked: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    rule: str | None


# --- sessions -------------------------------------------------------------------------------


async def insert_session(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(cs).values(**values))


async def insert_decision(
    conn: AsyncConnection,
    session_id: str,
    ranked: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    rule: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        insert(rd).values(
            session_id=session_id, ranked=ranked, rejected=rejected, rule=rule, created_at=now
        )
    )


async def make_live(
    conn: AsyncConnection,
    session_id: str,
    *,
    seq: int,
    provider: CardProvider,
    reference: str,
    checkout_url: str,
    score: Decimal,
    now: datetime,
) -> SessionRow:
    """Name the live attempt (only while none is: one live provider session per Pago session)."""
    statement = (
        update(cs)
        .where(cs.c.id == session_id, cs.c.live_seq.is_(None))
        .values(
            provider=provider.value,
            provider_reference=reference,
            checkout_url=checkout_url,
            live_seq=seq,
            score=score,
            updated_at=now,
        )
        .returning(*_SESSION_COLUMNS)
    )
    return _session((await conn.execute(statement)).one())


async def find_session(
    conn: AsyncConnection, merchant_id: str, mode: Mode, session_id: str
) -> SessionRow | None:
    query = select(*_SESSION_COLUMNS).where(
        cs.c.id == session_id, cs.c.merchant_id == merchant_id, cs.c.mode == mode.value
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _session(row)


async def lock_session(conn: AsyncConnection, session_id: str) -> SessionRow | None:
    query = select(*_SESSION_COLUMNS).where(cs.c.id == session_id).with_for_update()
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _session(row)


async def set_status(
    conn: AsyncConnection,
    session_id: str,
    status: CardSessionStatus,
    rank: int,
    now: datetime,
) -> SessionRow:
    """Move the session (compare-and-set on rank: a lower or equal rank never overwrites)."""
    statement = (
        update(cs)
        .where(cs.c.id == session_id, cs.c.status_rank < rank)
        .values(status=status.value, status_rank=rank, updated_at=now)
        .returning(*_SESSION_COLUMNS)
    )
    return _session((await conn.execute(statement)).one())


async def due_for_expiry(conn: AsyncConnection, now: datetime, limit: int) -> list[SessionRow]:
    """PENDING sessions past ``expires_at``, locked; replicas skip each other's rows."""
    query = (
        select(*_SESSION_COLUMNS)
        .where(cs.c.status == CardSessionStatus.PENDING.value, cs.c.expires_at <= now)
        .order_by(cs.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_session(row) for row in (await conn.execute(query)).all()]


async def due_for_reconcile(
    conn: AsyncConnection, now: datetime, first: timedelta, limit: int
) -> list[SessionRow]:
    """PENDING sessions with a live provider checkout whose next reconciliation check is due
    (never checked: ``first`` after creation), and those due for expiry (a last check before
    the expiry job ends them); locked, replicas skip each other's rows."""
    due = func.coalesce(cs.c.reconcile_at, cs.c.created_at + first)
    query = (
        select(*_SESSION_COLUMNS)
        .where(
            cs.c.status == CardSessionStatus.PENDING.value,
            cs.c.live_seq.is_not(None),
            cs.c.provider_reference.is_not(None),
            or_(due <= now, cs.c.expires_at <= now),
        )
        .order_by(due)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_session(row) for row in (await conn.execute(query)).all()]


async def set_reconcile_at(conn: AsyncConnection, session_id: str, at: datetime) -> None:
    await conn.execute(update(cs).where(cs.c.id == session_id).values(reconcile_at=at))


# --- attempts -------------------------------------------------------------------------------


async def insert_attempt(
    conn: AsyncConnection,
    session_id: str,
    seq: int,
    provider: CardProvider,
    idempotency_key: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(ca).values(
            session_id=session_id,
            seq=seq,
            provider=provider.value,
            idempotency_key=idempotency_key,
            status="creating",
            created_at=now,
            updated_at=now,
        )
    )


async def finish_attempt(
    conn: AsyncConnection,
    session_id: str,
    seq: int,
    *,
    status: str,
    now: datetime,
    reference: str | None = None,
    checkout_url: str | None = None,
    error: str | None = None,
    latency_ms: int | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if reference is not None:
        values["reference"] = reference
        values["checkout_url"] = checkout_url
    if error is not None:
        values["error"] = error[:500]
    if latency_ms is not None:
        values["latency_ms"] = latency_ms
    await conn.execute(
        update(ca).where(ca.c.session_id == session_id, ca.c.seq == seq).values(**values)
    )


async def attempts_of(conn: AsyncConnection, session_id: str) -> list[AttemptRow]:
    query = select(*_ATTEMPT_COLUMNS).where(ca.c.session_id == session_id).order_by(ca.c.seq)
    return [_attempt(row) for row in (await conn.execute(query)).all()]


async def attempt_by_reference(
    conn: AsyncConnection, provider: CardProvider, reference: str
) -> AttemptRow | None:
    query = select(*_ATTEMPT_COLUMNS).where(
        ca.c.provider == provider.value, ca.c.reference == reference
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _attempt(row)


async def unsettled_attempts(
    conn: AsyncConnection, older_than: datetime, limit: int
) -> list[tuple[AttemptRow, SessionRow]]:
    """Attempts whose create may have left a checkout nobody was sent to (timed out, or a
    process that died mid-call), with their session; locked, replicas skip each other's."""
    query = (
        select(*_ATTEMPT_COLUMNS, *_SESSION_COLUMNS)
        .join(cs, cs.c.id == ca.c.session_id)
        .where(ca.c.status.in_(("creating", "timed_out")), ca.c.created_at <= older_than)
        .order_by(ca.c.created_at)
        .limit(limit)
        .with_for_update(of=ca, skip_locked=True)
    )
    width = len(_ATTEMPT_COLUMNS)
    return [
        (_attempt(row[:width]), _session(row[width:])) for row in (await conn.execute(query)).all()
    ]


# --- decisions ------------------------------------------------------------------------------


async def decision_of(conn: AsyncConnection, session_id: str) -> DecisionRow | None:
    query = select(rd.c.ranked, rd.c.rejected, rd.c.rule).where(rd.c.session_id == session_id)
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else DecisionRow(list(row[0]), list(row[1]), row[2])


# --- webhook inbox --------------------------------------------------------------------------


async def inbox_insert(
    conn: AsyncConnection,
    *,
    provider: CardProvider,
    event_id: str,
    event_type: str,
    reference: str,
    session_id: str | None,
    outcome: CardSessionStatus | None,
    payload_sha256: str,
    now: datetime,
) -> bool:
    """``False`` when the notification was seen before (the unique provider + event id)."""
    statement = (
        insert(ib)
        .values(
            provider=provider.value,
            provider_event_id=event_id,
            event_type=event_type,
            reference=reference,
            session_id=session_id,
            outcome=outcome.value if outcome else None,
            payload_sha256=payload_sha256,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=[ib.c.provider, ib.c.provider_event_id])
        .returning(ib.c.provider)
    )
    return (await conn.execute(statement)).first() is not None


@dataclass(frozen=True, slots=True)
class RulesRow:
    """A merchant's stored routing rules, as written (``routing.rules.parse_rules`` reads it)."""

    pin: str | None
    exclude: list[str]
    split: dict[str, Any] | None


async def routing_rules(conn: AsyncConnection, merchant_id: str, mode: Mode) -> RulesRow | None:
    """The rules of ``merchant_id`` in ``mode``: one primary-key lookup, ``None`` without any."""
    query = select(rr.c.pin, rr.c.exclude, rr.c.split).where(
        rr.c.merchant_id == merchant_id, rr.c.mode == mode.value
    )
    row = (await conn.execute(query)).one_or_none()
    return RulesRow(row.pin, list(row.exclude), row.split) if row is not None else None
