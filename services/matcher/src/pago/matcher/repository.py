"""Every SQL statement of the matcher. Callers own the transaction; nothing here commits.

Lock order, which keeps the matcher's replicas, its scheduler and the resolution worker free of
deadlocks: session rows first, in ascending id order, then anything keyed by those sessions
(their transactions and payment exceptions).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.db.schema import live_status
from pago.common.enums import (
    ExceptionKind,
    ExceptionStatus,
    Mode,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
)
from pago.matcher.domain import PartitionProgress, ResolutionAction

TransferId = tuple[str, str, int]
"""``(network, tx_hash, log_index)``: the identity of a transfer, unique in Postgres."""

# A dict lookup is a tenth of an enum call (~300 ns), paid per column of every row read.
_MODES = {m.value: m for m in Mode}
_NETWORKS = {n.value: n for n in Network}
_STATUSES = {s.value: s for s in SessionStatus}
_TOKENS = {t.value: t for t in Token}
_TX_STATUSES = {s.value: s for s in TransactionStatus}


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A ``checkout_sessions`` row as the matcher reads it under its lock: what the domain
    decides on and what the session object shows.

    Amounts are base units of ``currency`` (``decimals`` beside them).
    """

    id: str
    merchant_id: str
    sub_merchant_id: str | None
    mode: Mode
    status: SessionStatus
    network: Network
    currency: Token
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
    """Exactly as the merchant sent it (a decimal string in ``pricing_currency``)."""
    exchange_rate: Decimal
    success_url: str | None
    cancel_url: str | None
    expires_at: datetime
    created_at: datetime
    version: int
    """The compare-and-set counter as read: :func:`update_sessions` writes only over it."""
    detection_rpc_url: str | None
    timed_out: bool


_SESSION_COLUMNS = ", ".join(f"s.{f.name}" for f in dataclasses.fields(SessionRow))
"""The columns of :class:`SessionRow` from ``checkout_sessions AS s``, in its field order."""


def _session_row(row: Row[Any]) -> SessionRow:
    # Unpacked by position (the field order, as selected): a Row's attribute access is a
    # __getattr__ fallback, 0.6 µs a column, 15 ms of a 1,000-session batch.
    (
        id_,
        merchant_id,
        sub_merchant_id,
        mode,
        status,
        network,
        currency,
        currency_contract,
        decimals,
        amount_expected,
        amount_received,
        fee_amount,
        net_amount,
        pay_address,
        client_reference_id,
        pricing_currency,
        pricing_amount,
        exchange_rate,
        success_url,
        cancel_url,
        expires_at,
        created_at,
        version,
        detection_rpc_url,
        timed_out,
    ) = row
    return SessionRow(
        id=id_,
        merchant_id=merchant_id,
        sub_merchant_id=sub_merchant_id,
        mode=_MODES[mode],
        status=_STATUSES[status],
        network=_NETWORKS[network],
        currency=_TOKENS[currency],
        currency_contract=currency_contract,
        decimals=decimals,
        amount_expected=int(amount_expected),
        amount_received=int(amount_received),
        fee_amount=int(fee_amount),
        net_amount=int(net_amount),
        pay_address=pay_address,
        client_reference_id=client_reference_id,
        pricing_currency=pricing_currency,
        pricing_amount=pricing_amount,
        exchange_rate=exchange_rate,
        success_url=success_url,
        cancel_url=cancel_url,
        expires_at=expires_at,
        created_at=created_at,
        version=version,
        detection_rpc_url=detection_rpc_url,
        timed_out=timed_out,
    )


@dataclass(frozen=True, slots=True)
class TransactionRow:
    """A ``session_transactions`` row."""

    session_id: str
    network: str
    tx_hash: str
    log_index: int
    token: Token
    contract: str
    amount: int
    """Base units of ``token``."""
    decimals: int
    from_address: str
    block_number: int
    block_hash: str
    status: TransactionStatus
    credited: bool
    confirmations: int
    aml_flags: tuple[str, ...]
    block_time: datetime | None
    """The block's timestamp; ``None`` when the watcher did not know it."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MerchantRow:
    """What the matcher reads of a merchant: its session object's name and logo, and its
    overrides of the house policy (``None``: the default)."""

    id: str
    name: str
    logo_url: str | None
    fee_rate: Decimal | None
    """A fraction of the amount received."""
    fee_floor: Decimal | None
    """Whole tokens."""
    underpayment_tolerance: Decimal | None
    """Whole tokens."""
    underpaid_extension_minutes: int


@dataclass(frozen=True, slots=True)
class HeldTransfer:
    """A transfer held uncredited for want of a screening, with its session's mode and deposit
    address: what a redelivered ``TransferObserved`` would carry."""

    network: Network
    mode: Mode
    token: Token
    contract: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    pay_address: str
    amount: int
    """Base units of ``token``."""
    decimals: int
    confirmations: int
    block_time: datetime | None


@dataclass(frozen=True, slots=True)
class RequestedResolution:
    """An open payment exception with an operator's resolution waiting to be applied."""

    kind: ExceptionKind
    tx_hash: str
    log_index: int
    requested_action: ResolutionAction


# Amounts travel as text arrays cast to numeric in SQL: exact like Decimal, and much cheaper for
# the driver to encode 1,000 at a time. Each lookup below filters by "= ANY(array)" on an
# indexed column before matching the exact tuples: joined straight against unnest(), the
# planner (which cannot see the arrays' sizes) picks a hash join over a full scan of the
# table — 60 ms at 50,000 sessions, linear beyond.


def _unnest_arrays(
    rows: Sequence[object], **columns: str | Callable[[Any], object]
) -> dict[str, list[object]]:
    """The bind parameters of a batch written through ``unnest()``: per parameter name, one
    array with each row's value, read from the row attribute named (or by the function given)."""
    return {
        name: [getattr(r, source) if isinstance(source, str) else source(r) for r in rows]
        for name, source in columns.items()
    }


def _as_text(attribute: str) -> Callable[[Any], str]:
    """An amount column: each row's ``attribute`` as text (cast to numeric in SQL, see above)."""
    return lambda row: str(getattr(row, attribute))


_KNOWN_TRANSFERS = text(
    """
    SELECT t.network, t.tx_hash, t.log_index, t.session_id
    FROM session_transactions AS t
    JOIN unnest(CAST(:networks AS text[]), CAST(:hashes AS text[]), CAST(:indexes AS int[]))
      AS k(network, tx_hash, log_index)
      ON t.network = k.network AND t.tx_hash = k.tx_hash AND t.log_index = k.log_index
    WHERE t.tx_hash = ANY(CAST(:hashes AS text[]))
    """
)


async def sessions_of_known_transfers(
    conn: AsyncConnection, ids: Iterable[TransferId]
) -> dict[TransferId, str]:
    """The session each already-recorded transfer belongs to (it never moves to another)."""
    ids = list(set(ids))
    if not ids:
        return {}
    result = await conn.execute(
        _KNOWN_TRANSFERS,
        {
            "networks": [i[0] for i in ids],
            "hashes": [i[1] for i in ids],
            "indexes": [i[2] for i in ids],
        },
    )
    # Unpacked, as every batch-sized result here: see _session_row.
    return {(network, tx_hash, index): sid for network, tx_hash, index, sid in result}


_LOCK_TARGETS = text(
    f"""
    SELECT {_SESSION_COLUMNS} FROM checkout_sessions AS s
    WHERE id = ANY(CAST(:ids AS text[]))
       OR (network = ANY(CAST(:networks AS text[])) AND mode = ANY(CAST(:modes AS text[]))
           AND lower(pay_address) = ANY(CAST(:addresses AS text[])))
    ORDER BY id
    FOR UPDATE
    """  # noqa: S608 - module constants only
)


async def lock_targets(
    conn: AsyncConnection, ids: Iterable[str], addresses: Iterable[tuple[str, str, str]]
) -> dict[str, SessionRow]:
    """Lock and read the sessions ``ids`` and every session whose deposit address is one of
    ``(network, mode, lower(address))``, in one round trip (ascending id order).

    Addresses compare lower-cased on both sides so that ``ix_sessions_pay_address_ci`` serves
    every family; callers keep only exact matches for the case-sensitive (base58) families.
    The three columns are matched each against its own array (what the index can serve), so an
    address of one network also matches on another listed network; the caller routes by exact
    key, and the few extra sessions locked (and terminal ones that once held an address) cost
    less than a second round trip to find out which session is the one.
    """
    ids = sorted(set(ids))
    keys = set(addresses)
    if not ids and not keys:
        return {}
    result = await conn.execute(
        _LOCK_TARGETS,
        {
            "ids": ids,
            "networks": sorted({k[0] for k in keys}),
            "modes": sorted({k[1] for k in keys}),
            "addresses": sorted({k[2] for k in keys}),
        },
    )
    return {record.id: record for record in map(_session_row, result)}


_LOCK_SESSIONS = text(
    f"""
    SELECT {_SESSION_COLUMNS} FROM checkout_sessions AS s
    WHERE id = ANY(:ids) ORDER BY id FOR UPDATE
    """  # noqa: S608 - module constants only
)


async def lock_sessions(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, SessionRow]:
    """Lock the sessions (ascending id order: no deadlock between lockers) and read them."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    result = await conn.execute(_LOCK_SESSIONS, {"ids": ids})
    return {record.id: record for record in map(_session_row, result)}


_LOCK_EXPIRING = text(
    f"""
    SELECT {_SESSION_COLUMNS} FROM checkout_sessions AS s
    LEFT JOIN unnest(
        CAST(:networks AS text[]), CAST(:modes AS text[]), CAST(:times AS timestamptz[])
    ) AS c(network, mode, chain_time) ON c.network = s.network AND c.mode = s.mode
    WHERE {live_status("s.status")} AND s.expires_at <= :now
      AND (
        s.expires_at < :grace_cutoff
        OR (
          c.chain_time > s.expires_at
          AND NOT EXISTS (
            SELECT 1 FROM session_transactions AS t
            WHERE t.session_id = s.id AND t.status = 'Confirming' AND NOT t.credited
              AND t.token = s.currency AND t.block_time < s.expires_at
          )
        )
      )
    ORDER BY s.expires_at
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
    """  # noqa: S608 - module constants only
)


async def lock_expiring_sessions(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    *,
    grace: timedelta,
    chain_times: Mapping[tuple[str, str], datetime],
) -> dict[str, SessionRow]:
    """Lock up to ``limit`` payable sessions that may expire now and that nobody else holds.

    The filter mirrors the domain's ``expiry_due`` (which decides again under the lock), so a
    session still waiting for its chain's progress or for a payment in flight never takes a
    place in the batch: past ``expires_at`` and either past ``expires_at + grace`` or its
    network × mode's ``chain_times`` entry later than ``expires_at`` with no undecided transfer
    in the session's token whose block is older than ``expires_at``.

    ``SKIP LOCKED``: a session the consumer is crediting right now is left alone (the payment
    wins), and replicas running this at once split the work instead of queueing on it.
    """
    keys = list(chain_times)
    result = await conn.execute(
        _LOCK_EXPIRING,
        {
            "now": now,
            "grace_cutoff": now - grace,
            "limit": limit,
            "networks": [k[0] for k in keys],
            "modes": [k[1] for k in keys],
            "times": [chain_times[k] for k in keys],
        },
    )
    return {record.id: record for record in map(_session_row, result)}


async def chain_progress(conn: AsyncConnection) -> dict[tuple[str, str], list[PartitionProgress]]:
    """Per ``(network, mode)``, every partition's newest progress marker (a few hundred rows at
    most: networks × modes × partitions)."""
    result = await conn.execute(
        text("SELECT network, mode, partition, partitions, block_time FROM chain_progress")
    )
    by_chain: dict[tuple[str, str], list[PartitionProgress]] = defaultdict(list)
    for row in result:
        by_chain[(row.network, row.mode)].append(
            PartitionProgress(
                partition=row.partition, partitions=row.partitions, block_time=row.block_time
            )
        )
    return by_chain


@dataclass(frozen=True, slots=True)
class ProgressWrite:
    network: str
    mode: str
    partition: int
    partitions: int
    block_number: int
    block_hash: str
    block_time: datetime


_RECORD_PROGRESS = text(
    """
    INSERT INTO chain_progress AS p (
        network, mode, partition, partitions, block_number, block_hash, block_time, updated_at
    )
    SELECT u.*, CAST(:now AS timestamptz) FROM unnest(
        CAST(:networks AS text[]), CAST(:modes AS text[]), CAST(:partitions AS int[]),
        CAST(:counts AS int[]), CAST(:blocks AS bigint[]), CAST(:hashes AS text[]),
        CAST(:times AS timestamptz[])
    ) AS u
    ON CONFLICT (network, mode, partition) DO UPDATE SET
        partitions = GREATEST(p.partitions, EXCLUDED.partitions),
        block_number = EXCLUDED.block_number,
        block_hash = EXCLUDED.block_hash,
        block_time = EXCLUDED.block_time,
        updated_at = EXCLUDED.updated_at
    WHERE EXCLUDED.block_time > p.block_time
       OR (EXCLUDED.block_time = p.block_time AND EXCLUDED.block_number > p.block_number)
       OR EXCLUDED.partitions > p.partitions
    """
)


async def record_progress(
    conn: AsyncConnection, rows: Sequence[ProgressWrite], now: datetime
) -> None:
    """Keep, per ``(network, mode, partition)``, the marker with the greatest block time (at
    most one row per key per call): a replayed or reordered older marker never moves it back."""
    if not rows:
        return
    await conn.execute(
        _RECORD_PROGRESS,
        {
            "now": now,
            **_unnest_arrays(
                rows,
                networks="network",
                modes="mode",
                partitions="partition",
                counts="partitions",
                blocks="block_number",
                hashes="block_hash",
                times="block_time",
            ),
        },
    )


@dataclass(frozen=True, slots=True)
class IgnoredWrite:
    network: str
    mode: str
    tx_hash: str
    log_index: int
    session_id: str
    token: str
    from_address: str
    amount_raw: int
    """Base units of ``token``."""
    decimals: int
    stage: str
    reason: str
    observed_at: datetime


_INSERT_IGNORED = text(
    """
    INSERT INTO ignored_transfers (
        network, mode, tx_hash, log_index, session_id, token, from_address, amount_raw,
        decimals, stage, reason, observed_at
    )
    SELECT * FROM unnest(
        CAST(:networks AS text[]), CAST(:modes AS text[]), CAST(:hashes AS text[]),
        CAST(:indexes AS int[]), CAST(:session_ids AS text[]), CAST(:tokens AS text[]),
        CAST(:froms AS text[]), CAST(CAST(:amounts AS text[]) AS numeric[]),
        CAST(:decimals AS smallint[]), CAST(:stages AS text[]), CAST(:reasons AS text[]),
        CAST(:observed AS timestamptz[])
    )
    ON CONFLICT (network, tx_hash, log_index) DO NOTHING
    RETURNING network, reason
    """
)


async def insert_ignored(
    conn: AsyncConnection, rows: Sequence[IgnoredWrite]
) -> list[tuple[str, str]]:
    """Record transfers kept out of every session, once per identity (a redelivery is a
    no-op); return ``(network, reason)`` of the rows actually inserted."""
    if not rows:
        return []
    result = await conn.execute(
        _INSERT_IGNORED,
        {
            **_unnest_arrays(
                rows,
                networks="network",
                modes="mode",
                hashes="tx_hash",
                indexes="log_index",
                session_ids="session_id",
                tokens="token",
                froms="from_address",
                amounts=_as_text("amount_raw"),
                decimals="decimals",
                stages="stage",
                reasons="reason",
                observed="observed_at",
            ),
        },
    )
    return [(network, reason) for network, reason in result]


_TRANSACTIONS_OF = text(
    f"""
    SELECT {", ".join(f.name for f in dataclasses.fields(TransactionRow))}
    FROM session_transactions WHERE session_id = ANY(:ids) ORDER BY id
    """  # noqa: S608 - module constants only
)


def _transaction_row(row: Row[Any]) -> TransactionRow:
    # By position, as _session_row.
    (
        session_id,
        network,
        tx_hash,
        log_index,
        token,
        contract,
        amount,
        decimals,
        from_address,
        block_number,
        block_hash,
        status,
        credited,
        confirmations,
        aml_flags,
        block_time,
        created_at,
    ) = row
    return TransactionRow(
        session_id=session_id,
        network=network,
        tx_hash=tx_hash,
        log_index=log_index,
        token=_TOKENS[token],
        contract=contract,
        amount=int(amount),
        decimals=decimals,
        from_address=from_address,
        block_number=block_number,
        block_hash=block_hash,
        status=_TX_STATUSES[status],
        credited=credited,
        confirmations=confirmations,
        aml_flags=tuple(aml_flags or ()),
        block_time=block_time,
        created_at=created_at,
    )


async def transactions_of(
    conn: AsyncConnection, session_ids: Iterable[str]
) -> dict[str, list[TransactionRow]]:
    """Each session's transaction rows in the order they were first seen."""
    ids = list(set(session_ids))
    rows: dict[str, list[TransactionRow]] = defaultdict(list)
    if not ids:
        return rows
    for row in await conn.execute(_TRANSACTIONS_OF, {"ids": ids}):
        record = _transaction_row(row)
        rows[record.session_id].append(record)
    return rows


_MERCHANTS = text(
    """
    SELECT id, name, logo_url, fee_rate, fee_floor, underpayment_tolerance,
           underpaid_extension_minutes
    FROM merchants WHERE id = ANY(:ids)
    """
)


async def merchants(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, MerchantRow]:
    ids = list(set(ids))
    if not ids:
        return {}
    result = await conn.execute(_MERCHANTS, {"ids": ids})
    return {
        r.id: MerchantRow(
            id=r.id,
            name=r.name,
            logo_url=r.logo_url,
            fee_rate=r.fee_rate,
            fee_floor=r.fee_floor,
            underpayment_tolerance=r.underpayment_tolerance,
            underpaid_extension_minutes=r.underpaid_extension_minutes,
        )
        for r in result
    }


async def sub_merchant_codes(conn: AsyncConnection, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = [i for i in set(ids) if i is not None]
    if not wanted:
        return {}
    result = await conn.execute(
        text("SELECT id, code FROM sub_merchants WHERE id = ANY(:ids)"), {"ids": wanted}
    )
    return {id_: code for id_, code in result}


_UPSERT_TRANSACTIONS = text(
    """
    INSERT INTO session_transactions AS t (
        session_id, network, tx_hash, log_index, token, contract, amount, decimals,
        from_address, block_number, block_hash, status, credited, confirmations, aml_flags,
        block_time, created_at, updated_at
    )
    SELECT u.*, CAST(:now AS timestamptz), CAST(:now AS timestamptz) FROM unnest(
        CAST(:session_ids AS text[]), CAST(:networks AS text[]), CAST(:hashes AS text[]),
        CAST(:indexes AS int[]), CAST(:tokens AS text[]), CAST(:contracts AS text[]),
        CAST(CAST(:amounts AS text[]) AS numeric[]), CAST(:decimals AS smallint[]),
        CAST(:froms AS text[]),
        CAST(:blocks AS bigint[]), CAST(:block_hashes AS text[]), CAST(:statuses AS text[]),
        CAST(:credited AS boolean[]), CAST(:confirmations AS int[]), CAST(:flags AS jsonb[]),
        CAST(:block_times AS timestamptz[])
    ) AS u
    ON CONFLICT (network, tx_hash, log_index) DO UPDATE SET
        status = EXCLUDED.status,
        credited = EXCLUDED.credited,
        confirmations = EXCLUDED.confirmations,
        aml_flags = EXCLUDED.aml_flags,
        block_number = EXCLUDED.block_number,
        block_hash = EXCLUDED.block_hash,
        block_time = COALESCE(EXCLUDED.block_time, t.block_time),
        updated_at = EXCLUDED.updated_at
    WHERE t.session_id = EXCLUDED.session_id
    """
)


@dataclass(frozen=True, slots=True)
class TransactionWrite:
    session_id: str
    network: str
    tx_hash: str
    log_index: int
    token: str
    contract: str
    amount: int
    """Base units of ``token``."""
    decimals: int
    from_address: str
    block_number: int
    block_hash: str
    status: str
    credited: bool
    confirmations: int
    aml_flags: tuple[str, ...]
    block_time: datetime | None = None


async def upsert_transactions(
    conn: AsyncConnection, rows: Sequence[TransactionWrite], now: datetime
) -> None:
    """Insert or update transaction rows by identity (each identity at most once per call);
    ``now`` is a new row's ``created_at`` and every row's ``updated_at``.

    The ``WHERE`` on the update keeps a transfer in the session that first recorded it even if
    a caller got the routing wrong: the row stays put rather than moving money between sessions.
    """
    if not rows:
        return
    await conn.execute(
        _UPSERT_TRANSACTIONS,
        {
            **_unnest_arrays(
                rows,
                session_ids="session_id",
                networks="network",
                hashes="tx_hash",
                indexes="log_index",
                tokens="token",
                contracts="contract",
                amounts=_as_text("amount"),
                decimals="decimals",
                froms="from_address",
                blocks="block_number",
                block_hashes="block_hash",
                statuses="status",
                credited="credited",
                confirmations="confirmations",
                flags=lambda r: json.dumps(list(r.aml_flags)) if r.aml_flags else "[]",
                block_times="block_time",
            ),
            "now": now,
        },
    )


@dataclass(frozen=True, slots=True)
class SessionWrite:
    id: str
    expected_version: int
    """The version read under the lock: the update is a compare-and-set on it."""
    status: str
    amount_received: int
    fee_amount: int
    net_amount: int
    expires_at: datetime
    version: int
    timed_out: bool = False


_UPDATE_SESSIONS = text(
    """
    UPDATE checkout_sessions AS s SET
        status = v.status,
        amount_received = v.received,
        fee_amount = v.fee,
        net_amount = v.net,
        expires_at = v.expires_at,
        version = v.version,
        timed_out = v.timed_out,
        updated_at = :now
    FROM unnest(
        CAST(:ids AS text[]), CAST(:expected AS int[]), CAST(:statuses AS text[]),
        CAST(CAST(:received AS text[]) AS numeric[]),
        CAST(CAST(:fees AS text[]) AS numeric[]), CAST(CAST(:nets AS text[]) AS numeric[]),
        CAST(:expires AS timestamptz[]), CAST(:versions AS int[]),
        CAST(:timed_out AS boolean[])
    ) AS v(id, expected, status, received, fee, net, expires_at, version, timed_out)
    WHERE s.id = v.id AND s.version = v.expected AND s.id = ANY(CAST(:ids AS text[]))
    RETURNING s.id
    """
)


async def update_sessions(
    conn: AsyncConnection, rows: Sequence[SessionWrite], now: datetime
) -> set[str]:
    """Write the new state of each session whose version is still the expected one; return
    the ids written (callers hold the row locks, so a miss means a bug, not a race)."""
    if not rows:
        return set()
    result = await conn.execute(
        _UPDATE_SESSIONS,
        {
            "now": now,
            **_unnest_arrays(
                rows,
                ids="id",
                expected="expected_version",
                statuses="status",
                received=_as_text("amount_received"),
                fees=_as_text("fee_amount"),
                nets=_as_text("net_amount"),
                expires="expires_at",
                versions="version",
                timed_out="timed_out",
            ),
        },
    )
    return set(result.scalars())


@dataclass(frozen=True, slots=True)
class ExceptionWrite:
    id: str
    session_id: str
    merchant_id: str
    mode: str
    kind: str
    network: str
    tx_hash: str
    log_index: int
    token: str
    amount: int
    """Base units of ``token``."""
    decimals: int
    detail: str
    created_at: datetime


_INSERT_EXCEPTIONS = text(
    """
    INSERT INTO payment_exceptions (
        id, session_id, merchant_id, mode, kind, status, network, tx_hash, log_index, token,
        amount, decimals, detail, created_at
    )
    SELECT u.id, u.session_id, u.merchant_id, u.mode, u.kind, 'open', u.network, u.tx_hash,
           u.log_index, u.token, u.amount, u.decimals, u.detail, u.created_at
    FROM unnest(
        CAST(:ids AS text[]), CAST(:session_ids AS text[]), CAST(:merchant_ids AS text[]),
        CAST(:modes AS text[]), CAST(:kinds AS text[]), CAST(:networks AS text[]),
        CAST(:hashes AS text[]), CAST(:indexes AS int[]), CAST(:tokens AS text[]),
        CAST(CAST(:amounts AS text[]) AS numeric[]), CAST(:decimals AS smallint[]),
        CAST(:details AS text[]),
        CAST(:created AS timestamptz[])
    ) AS u(id, session_id, merchant_id, mode, kind, network, tx_hash, log_index, token,
           amount, decimals, detail, created_at)
    ON CONFLICT (kind, network, tx_hash, log_index) DO NOTHING
    RETURNING kind
    """
)


async def insert_exceptions(conn: AsyncConnection, rows: Sequence[ExceptionWrite]) -> list[str]:
    """Open the exceptions not opened before (one case per kind and transfer); return the kinds
    of those actually opened."""
    if not rows:
        return []
    result = await conn.execute(
        _INSERT_EXCEPTIONS,
        {
            **_unnest_arrays(
                rows,
                ids="id",
                session_ids="session_id",
                merchant_ids="merchant_id",
                modes="mode",
                kinds="kind",
                networks="network",
                hashes="tx_hash",
                indexes="log_index",
                tokens="token",
                amounts=_as_text("amount"),
                decimals="decimals",
                details="detail",
                created="created_at",
            ),
        },
    )
    return list(result.scalars())


async def close_aml_holds(
    conn: AsyncConnection, decided: Mapping[TransferId, str], now: datetime
) -> int:
    """Close the open ``aml_unavailable`` cases of transfers now screened and decided.

    The hold was a placeholder while the provider was down; the transfer's own outcome (credit,
    ``blocked_funds``, …) is now recorded, so the case is dismissed with that outcome as note.
    """
    if not decided:
        return 0
    keys = list(decided)
    result = await conn.execute(
        text(
            """
            UPDATE payment_exceptions AS e SET
                status = :dismissed, resolved_at = :now, resolution_note = k.note
            FROM unnest(CAST(:networks AS text[]), CAST(:hashes AS text[]),
                        CAST(:indexes AS int[]), CAST(:notes AS text[]))
              AS k(network, tx_hash, log_index, note)
            WHERE e.kind = :kind AND e.status = :open
              AND e.network = k.network AND e.tx_hash = k.tx_hash AND e.log_index = k.log_index
              AND e.network = ANY(CAST(:networks AS text[]))
              AND e.tx_hash = ANY(CAST(:hashes AS text[]))
            """
        ),
        {
            "dismissed": ExceptionStatus.DISMISSED.value,
            "open": ExceptionStatus.OPEN.value,
            "kind": ExceptionKind.AML_UNAVAILABLE.value,
            "now": now,
            "networks": [k[0] for k in keys],
            "hashes": [k[1] for k in keys],
            "indexes": [k[2] for k in keys],
            "notes": [decided[k] for k in keys],
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def held_transfers(conn: AsyncConnection, limit: int) -> list[HeldTransfer]:
    """Transfers held uncredited for want of a screening, the longest held first."""
    result = await conn.execute(
        text(
            """
            SELECT t.network, s.mode, t.token, t.contract, t.tx_hash, t.log_index,
                   t.block_number, t.block_hash, t.from_address, s.pay_address, t.amount,
                   t.decimals, t.confirmations, t.block_time
            FROM payment_exceptions AS e
            JOIN session_transactions AS t
              ON t.network = e.network AND t.tx_hash = e.tx_hash AND t.log_index = e.log_index
            JOIN checkout_sessions AS s ON s.id = t.session_id
            WHERE e.kind = :kind AND e.status = :open
              AND t.status = 'Confirming' AND NOT t.credited
            ORDER BY e.created_at
            LIMIT :limit
            """
        ),
        {
            "kind": ExceptionKind.AML_UNAVAILABLE.value,
            "open": ExceptionStatus.OPEN.value,
            "limit": limit,
        },
    )
    return [
        HeldTransfer(
            network=Network(r.network),
            mode=Mode(r.mode),
            token=Token(r.token),
            contract=r.contract,
            tx_hash=r.tx_hash,
            log_index=r.log_index,
            block_number=r.block_number,
            block_hash=r.block_hash,
            from_address=r.from_address,
            pay_address=r.pay_address,
            amount=int(r.amount),
            decimals=r.decimals,
            confirmations=r.confirmations,
            block_time=r.block_time,
        )
        for r in result
    ]


async def count_held(conn: AsyncConnection) -> int:
    result = await conn.execute(
        text("SELECT count(*) FROM payment_exceptions WHERE kind = :kind AND status = :open"),
        {"kind": ExceptionKind.AML_UNAVAILABLE.value, "open": ExceptionStatus.OPEN.value},
    )
    return int(result.scalar_one())


async def requested_resolutions(conn: AsyncConnection, limit: int) -> list[tuple[str, str]]:
    """``(exception id, session id)`` of resolutions waiting to be applied, oldest first."""
    result = await conn.execute(
        text(
            """
            SELECT id, session_id FROM payment_exceptions
            WHERE requested_action IS NOT NULL AND status = :open
            ORDER BY requested_at
            LIMIT :limit
            """
        ),
        {"open": ExceptionStatus.OPEN.value, "limit": limit},
    )
    return [(r.id, r.session_id) for r in result]


async def lock_requested_exception(
    conn: AsyncConnection, exception_id: str
) -> RequestedResolution | None:
    """The exception, locked, if a resolution is still waiting on it (after its session lock)."""
    result = await conn.execute(
        text(
            """
            SELECT kind, tx_hash, log_index, requested_action FROM payment_exceptions
            WHERE id = :id AND requested_action IS NOT NULL AND status = :open
            FOR UPDATE
            """
        ),
        {"id": exception_id, "open": ExceptionStatus.OPEN.value},
    )
    r = result.first()
    if r is None:
        return None
    return RequestedResolution(
        kind=ExceptionKind(r.kind),
        tx_hash=r.tx_hash,
        log_index=r.log_index,
        requested_action=ResolutionAction(r.requested_action),
    )


async def finish_resolution(
    conn: AsyncConnection, exception_id: str, status: ExceptionStatus, now: datetime
) -> None:
    await conn.execute(
        text(
            """
            UPDATE payment_exceptions SET
                status = :status, resolved_at = :now, requested_action = NULL,
                resolution_error = NULL
            WHERE id = :id
            """
        ),
        {"id": exception_id, "status": status.value, "now": now},
    )


async def reject_resolution(conn: AsyncConnection, exception_id: str, error: str) -> None:
    """The requested action does not fit the session: the case stays open with the reason."""
    await conn.execute(
        text(
            """
            UPDATE payment_exceptions SET requested_action = NULL, resolution_error = :error
            WHERE id = :id
            """
        ),
        {"id": exception_id, "error": error},
    )


@dataclass(frozen=True, slots=True)
class AddressLease:
    """The deposit address of a session whose end or ``expires_at`` moved in this batch."""

    session_id: str
    family: str
    mode: str
    address: str
    previous_expires_at: datetime
    expires_at: datetime


# As with the lookups above, the "= ANY(array)" filters let the planner reach the rows through
# uq_deposit_addresses_address instead of hashing the unnest() against the whole table; the
# family and mode arrays hold each value once (Postgres before 17 descends the index once per
# combination of array elements: 1 × 1 × 1,000, not 1,000³).
_RELEASE_ADDRESSES = text(
    """
    UPDATE deposit_addresses AS d
    SET released_at = greatest(u.expires_at, CAST(:now AS timestamptz))
    FROM unnest(
        CAST(:session_ids AS text[]), CAST(:families AS text[]), CAST(:modes AS text[]),
        CAST(:addresses AS text[]), CAST(:expires AS timestamptz[])
    ) AS u(session_id, family, mode, address, expires_at)
    WHERE d.family = u.family AND d.mode = u.mode AND d.address = u.address
      AND d.session_id = u.session_id AND d.released_at IS NULL
      AND d.family = ANY(CAST(:family_set AS text[])) AND d.mode = ANY(CAST(:mode_set AS text[]))
      AND d.address = ANY(CAST(:addresses AS text[]))
    """
)


def _key_sets(leases: Sequence[AddressLease]) -> dict[str, list[str]]:
    return {
        "family_set": sorted({x.family for x in leases}),
        "mode_set": sorted({x.mode for x in leases}),
    }


async def release_addresses(
    conn: AsyncConnection, leases: Sequence[AddressLease], now: datetime
) -> None:
    """The sessions ended at ``now``: each one's address starts its cool-down from the later of
    its ``expires_at`` and ``now`` (the api re-leases a pool address only after the cool-down).

    Row locks follow the house order: the sessions are locked already, then their addresses.
    """
    if not leases:
        return
    await conn.execute(
        _RELEASE_ADDRESSES,
        {
            "now": now,
            **_key_sets(leases),
            "session_ids": [x.session_id for x in leases],
            "families": [x.family for x in leases],
            "modes": [x.mode for x in leases],
            "addresses": [x.address for x in leases],
            "expires": [x.expires_at for x in leases],
        },
    )


_EXTEND_LEASES = text(
    """
    UPDATE deposit_addresses AS d
    SET leased_until = greatest(d.leased_until, u.expires_at + (d.leased_until - u.previous))
    FROM unnest(
        CAST(:session_ids AS text[]), CAST(:families AS text[]), CAST(:modes AS text[]),
        CAST(:addresses AS text[]), CAST(:previous AS timestamptz[]),
        CAST(:expires AS timestamptz[])
    ) AS u(session_id, family, mode, address, previous, expires_at)
    WHERE d.family = u.family AND d.mode = u.mode AND d.address = u.address
      AND d.session_id = u.session_id AND d.leased_until IS NOT NULL
      AND d.family = ANY(CAST(:family_set AS text[])) AND d.mode = ANY(CAST(:mode_set AS text[]))
      AND d.address = ANY(CAST(:addresses AS text[]))
    RETURNING d.session_id, d.leased_until
    """
)


async def extend_leases(
    conn: AsyncConnection, leases: Sequence[AddressLease]
) -> dict[str, datetime]:
    """Move each lease's end by as much as its session's ``expires_at`` moved (the watch grace
    the api gave it stays the same); return the new ends by session id. A session without a
    lease row (not allocated by the api) is left out."""
    if not leases:
        return {}
    result = await conn.execute(
        _EXTEND_LEASES,
        {
            **_key_sets(leases),
            "session_ids": [x.session_id for x in leases],
            "families": [x.family for x in leases],
            "modes": [x.mode for x in leases],
            "addresses": [x.address for x in leases],
            "previous": [x.previous_expires_at for x in leases],
            "expires": [x.expires_at for x in leases],
        },
    )
    return {sid: leased_until for sid, leased_until in result}
