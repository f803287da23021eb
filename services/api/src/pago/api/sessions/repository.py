"""SQL of checkout sessions (SQLAlchemy Core over ``pago.common.db.schema``).

Listing is ``created_at DESC, id DESC`` over the ``(merchant_id, mode, created_at, id)``
indexes — ``ix_sessions_list``, or ``ix_sessions_list_own`` for the default "this merchant, not
its sub-merchants" scope, or ``ix_sessions_sub_merchant`` for one sub-merchant — so a page is an
index range scan whatever the table's size. Search is exact (indexable) on each field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import checkout_sessions, merchants, session_transactions, sub_merchants
from pago.common.enums import Network, SessionStatus

cs = checkout_sessions


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session row with what the session object shows of its merchant and sub-merchant.

    Amounts are base units of the token (``decimals`` beside them).
    """

    id: str
    merchant_id: str
    sub_merchant_id: str | None
    sub_merchant_code: str | None
    merchant_name: str
    merchant_logo_url: str | None
    mode: str
    status: SessionStatus
    network: Network
    currency: str
    currency_contract: str
    decimals: int
    amount_expected: int
    amount_received: int
    fee_amount: int
    net_amount: int
    pay_address: str
    client_reference_id: str | None
    pricing_currency: str
    pricing_amount: str
    exchange_rate: Decimal
    success_url: str | None
    cancel_url: str | None
    expires_at: datetime
    created_at: datetime
    detection_rpc_url: str | None = None
    """From the chains registry when the session was created (like ``currency_contract``)."""


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    session_id: str
    tx_hash: str
    amount: int
    """Base units of the session's token."""
    decimals: int
    network: str
    status: str
    confirmations: int
    from_address: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Scope:
    """Which sessions a caller sees: always one merchant and mode, maybe one sub-merchant."""

    merchant_id: str
    mode: str
    sub_merchant_id: str | None
    """Set: only this sub-merchant's sessions."""


@dataclass(frozen=True, slots=True)
class ListFilter:
    scope: Scope
    parent_only: bool
    """Exclude sub-merchant sessions (the default unless ``include_sub_merchants``)."""
    statuses: Sequence[str] = ()
    networks: Sequence[str] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: Sequence[str] = ()
    """Exact values to find in id, tx hash, pay address or client_reference_id."""


_INSERT_SESSION = insert(cs)


async def insert_session(conn: AsyncConnection, record: SessionRecord) -> None:
    await conn.execute(
        _INSERT_SESSION,
        {
            "id": record.id,
            "merchant_id": record.merchant_id,
            "sub_merchant_id": record.sub_merchant_id,
            "mode": record.mode,
            "status": record.status.value,
            "network": record.network.value,
            "currency": record.currency,
            "currency_contract": record.currency_contract,
            "decimals": record.decimals,
            "amount_expected": record.amount_expected,
            "amount_received": record.amount_received,
            "fee_amount": record.fee_amount,
            "net_amount": record.net_amount,
            "pay_address": record.pay_address,
            "client_reference_id": record.client_reference_id,
            "pricing_currency": record.pricing_currency,
            "pricing_amount": record.pricing_amount,
            "exchange_rate": record.exchange_rate,
            "success_url": record.success_url,
            "cancel_url": record.cancel_url,
            "expires_at": record.expires_at,
            "created_at": record.created_at,
            "updated_at": record.created_at,
            "detection_rpc_url": record.detection_rpc_url,
        },
    )


def _select_sessions() -> Select[Any]:
    return select(
        cs,
        merchants.c.name.label("merchant_name"),
        merchants.c.logo_url.label("merchant_logo_url"),
        sub_merchants.c.code.label("sub_merchant_code"),
    ).select_from(
        cs.join(merchants, merchants.c.id == cs.c.merchant_id).outerjoin(
            sub_merchants, sub_merchants.c.id == cs.c.sub_merchant_id
        )
    )


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        merchant_id=row.merchant_id,
        sub_merchant_id=row.sub_merchant_id,
        sub_merchant_code=row.sub_merchant_code,
        merchant_name=row.merchant_name,
        merchant_logo_url=row.merchant_logo_url,
        mode=row.mode,
        status=SessionStatus(row.status),
        network=Network(row.network),
        currency=row.currency,
        currency_contract=row.currency_contract,
        decimals=row.decimals,
        amount_expected=int(row.amount_expected),
        amount_received=int(row.amount_received),
        fee_amount=int(row.fee_amount),
        net_amount=int(row.net_amount),
        pay_address=row.pay_address,
        client_reference_id=row.client_reference_id,
        pricing_currency=row.pricing_currency,
        pricing_amount=row.pricing_amount,
        exchange_rate=row.exchange_rate,
        success_url=row.success_url,
        cancel_url=row.cancel_url,
        expires_at=row.expires_at,
        created_at=row.created_at,
        detection_rpc_url=row.detection_rpc_url,
    )


def _scoped(scope: Scope) -> list[ColumnElement[bool]]:
    conditions = [cs.c.merchant_id == scope.merchant_id, cs.c.mode == scope.mode]
    if scope.sub_merchant_id is not None:
        conditions.append(cs.c.sub_merchant_id == scope.sub_merchant_id)
    return conditions


async def get_session(
    conn: AsyncConnection, session_id: str, scope: Scope, *, for_update: bool = False
) -> SessionRecord | None:
    query = _select_sessions().where(cs.c.id == session_id, *_scoped(scope))
    if for_update:
        query = query.with_for_update(of=cs)
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _record(row)


def _filters(f: ListFilter) -> list[ColumnElement[bool]]:
    conditions = _scoped(f.scope)
    if f.scope.sub_merchant_id is None and f.parent_only:
        conditions.append(cs.c.sub_merchant_id.is_(None))
    if f.statuses:
        conditions.append(cs.c.status.in_(f.statuses))
    if f.networks:
        conditions.append(cs.c.network.in_(f.networks))
    if f.created_after is not None:
        conditions.append(cs.c.created_at > f.created_after)
    if f.created_before is not None:
        conditions.append(cs.c.created_at < f.created_before)
    if f.search:
        by_tx = select(session_transactions.c.session_id).where(
            session_transactions.c.tx_hash.in_(f.search)
        )
        conditions.append(
            or_(
                cs.c.id.in_(f.search),
                cs.c.client_reference_id.in_(f.search),
                # All networks listed so that (network, mode, pay_address) is usable.
                and_(cs.c.network.in_([n.value for n in Network]), cs.c.pay_address.in_(f.search)),
                cs.c.id.in_(by_tx),
            )
        )
    return conditions


def list_query(f: ListFilter, *, limit: int, offset: int) -> Select[Any]:
    return (
        _select_sessions()
        .where(*_filters(f))
        .order_by(cs.c.created_at.desc(), cs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )


def count_query(f: ListFilter) -> Select[Any]:
    return select(func.count()).select_from(cs).where(*_filters(f))


async def list_sessions(
    conn: AsyncConnection, f: ListFilter, *, limit: int, offset: int
) -> list[SessionRecord]:
    return [_record(row) for row in await conn.execute(list_query(f, limit=limit, offset=offset))]


async def count_sessions(conn: AsyncConnection, f: ListFilter) -> int:
    return int((await conn.execute(count_query(f))).scalar_one())


async def transactions_of(
    conn: AsyncConnection, session_ids: Sequence[str]
) -> dict[str, list[TransactionRecord]]:
    if not session_ids:
        return {}
    st = session_transactions
    query = (
        select(
            st.c.session_id,
            st.c.tx_hash,
            st.c.amount,
            st.c.decimals,
            st.c.network,
            st.c.status,
            st.c.confirmations,
            st.c.from_address,
            st.c.created_at,
        )
        .where(st.c.session_id.in_(session_ids))
        .order_by(st.c.created_at, st.c.id)
    )
    found: dict[str, list[TransactionRecord]] = defaultdict(list)
    for row in await conn.execute(query):
        found[row.session_id].append(
            TransactionRecord(
                session_id=row.session_id,
                tx_hash=row.tx_hash,
                amount=int(row.amount),
                decimals=row.decimals,
                network=row.network,
                status=row.status,
                confirmations=row.confirmations,
                from_address=row.from_address,
                created_at=row.created_at,
            )
        )
    return found


async def sub_merchant_id(conn: AsyncConnection, merchant_id: str, code: str) -> str | None:
    query = select(sub_merchants.c.id).where(
        sub_merchants.c.merchant_id == merchant_id, sub_merchants.c.code == code
    )
    return (await conn.execute(query)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class OrderReference:
    """What the duplicate-order guard compares: one owner's reference on a network × token."""

    merchant_id: str
    mode: str
    sub_merchant_id: str | None
    """The owner exactly: ``None`` is the merchant's own sessions, not every sub-merchant's."""
    network: str
    currency: str
    client_reference_id: str


ORDER_LOCK_NAMESPACE = 0x6F7264  # "ord": apart from the outbox's shard locks
_LOCK_ORDER = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))")


async def lock_order_reference(conn: AsyncConnection, ref: OrderReference) -> None:
    """Serialize creates of one reference until this transaction ends (a hash collision only
    serializes two unrelated references)."""
    key = "\x1f".join(
        (
            ref.merchant_id,
            ref.mode,
            ref.sub_merchant_id or "",
            ref.network,
            ref.currency,
            ref.client_reference_id,
        )
    )
    await conn.execute(_LOCK_ORDER, {"ns": ORDER_LOCK_NAMESPACE, "key": key})


async def newest_by_reference(conn: AsyncConnection, ref: OrderReference) -> SessionRecord | None:
    owner = (
        cs.c.sub_merchant_id.is_(None)
        if ref.sub_merchant_id is None
        else cs.c.sub_merchant_id == ref.sub_merchant_id
    )
    query = (
        _select_sessions()
        .where(
            cs.c.merchant_id == ref.merchant_id,
            cs.c.mode == ref.mode,
            cs.c.client_reference_id == ref.client_reference_id,
            cs.c.network == ref.network,
            cs.c.currency == ref.currency,
            owner,
        )
        .order_by(cs.c.created_at.desc(), cs.c.id.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _record(row)


async def mark_expired(conn: AsyncConnection, session_id: str, now: datetime) -> bool:
    """Pending → Expired (compare-and-set: a payment that got there first wins)."""
    statement = (
        update(cs)
        .where(cs.c.id == session_id, cs.c.status == SessionStatus.PENDING.value)
        .values(status=SessionStatus.EXPIRED.value, updated_at=now, version=cs.c.version + 1)
        .returning(cs.c.id)
    )
    return (await conn.execute(statement)).first() is not None
