"""Every SQL statement of the matcher. Callers own the transaction; nothing here commits.

Lock order, which keeps the matcher's replicas, its scheduler and the resolution worker free of
deadlocks: session rows first, in ascending id order, then anything keyed by those sessions
(their transactions and payment exceptions).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.enums import ExceptionKind, ExceptionStatus, SessionStatus

LIVE = (SessionStatus.PENDING.value, SessionStatus.UNDERPAID.value)

TransferId = tuple[str, str, int]
"""``(network, tx_hash, log_index)``: the identity of a transfer, unique in Postgres."""


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
    return {(r.network, r.tx_hash, r.log_index): r.session_id for r in result}


_LOCK_TARGETS = text(
    """
    SELECT * FROM checkout_sessions
    WHERE id = ANY(CAST(:ids AS text[]))
       OR (network = ANY(CAST(:networks AS text[])) AND mode = ANY(CAST(:modes AS text[]))
           AND lower(pay_address) = ANY(CAST(:addresses AS text[])))
    ORDER BY id
    FOR UPDATE
    """
)


async def lock_targets(
    conn: AsyncConnection, ids: Iterable[str], addresses: Iterable[tuple[str, str, str]]
) -> dict[str, RowMapping]:
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
    return {row["id"]: row for row in result.mappings()}


async def lock_sessions(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, RowMapping]:
    """Lock the sessions (ascending id order: no deadlock between lockers) and read them."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    result = await conn.execute(
        text("SELECT * FROM checkout_sessions WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": ids},
    )
    return {row["id"]: row for row in result.mappings()}


_LOCK_EXPIRING = text(
    """
    SELECT s.* FROM checkout_sessions AS s
    LEFT JOIN unnest(
        CAST(:networks AS text[]), CAST(:modes AS text[]), CAST(:times AS timestamptz[])
    ) AS c(network, mode, chain_time) ON c.network = s.network AND c.mode = s.mode
    WHERE s.status IN ('Pending', 'Underpaid') AND s.expires_at <= :now
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
    """
)


async def lock_expiring_sessions(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    *,
    grace: timedelta,
    chain_times: Mapping[tuple[str, str], datetime],
) -> dict[str, RowMapping]:
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
    return {row["id"]: row for row in result.mappings()}


async def chain_progress(conn: AsyncConnection) -> list[RowMapping]:
    """Every partition's newest progress marker, of every network × mode (a few hundred rows
    at most: networks × modes × partitions)."""
    result = await conn.execute(
        text(
            "SELECT network, mode, partition, partitions, block_number, block_time "
            "FROM chain_progress"
        )
    )
    return list(result.mappings())


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
    return [(row.network, row.reason) for row in result]


async def transactions_of(
    conn: AsyncConnection, session_ids: Iterable[str]
) -> dict[str, list[RowMapping]]:
    """Each session's transaction rows in the order they were first seen."""
    ids = list(set(session_ids))
    rows: dict[str, list[RowMapping]] = defaultdict(list)
    if not ids:
        return rows
    result = await conn.execute(
        text("SELECT * FROM session_transactions WHERE session_id = ANY(:ids) ORDER BY id"),
        {"ids": ids},
    )
    for row in result.mappings():
        rows[row["session_id"]].append(row)
    return rows


async def merchants(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, RowMapping]:
    ids = list(set(ids))
    if not ids:
        return {}
    result = await conn.execute(text("SELECT * FROM merchants WHERE id = ANY(:ids)"), {"ids": ids})
    return {row["id"]: row for row in result.mappings()}


async def sub_merchant_codes(conn: AsyncConnection, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = [i for i in set(ids) if i is not None]
    if not wanted:
        return {}
    result = await conn.execute(
        text("SELECT id, code FROM sub_merchants WHERE id = ANY(:ids)"), {"ids": wanted}
    )
    return {r.id: r.code for r in result}


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
    return {row.id for row in result}


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
    return [row.kind for row in result]


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


async def held_transfers(conn: AsyncConnection, limit: int) -> list[RowMapping]:
    """Transfers held uncredited for want of a screening, with their session's mode and
    address (what a redelivered ``TransferObserved`` would carry)."""
    result = await conn.execute(
        text(
            """
            SELECT t.*, s.mode, s.pay_address
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
    return list(result.mappings())


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


async def lock_requested_exception(conn: AsyncConnection, exception_id: str) -> RowMapping | None:
    """The exception, locked, if a resolution is still waiting on it (after its session lock)."""
    result = await conn.execute(
        text(
            """
            SELECT * FROM payment_exceptions
            WHERE id = :id AND requested_action IS NOT NULL AND status = :open
            FOR UPDATE
            """
        ),
        {"id": exception_id, "open": ExceptionStatus.OPEN.value},
    )
    return result.mappings().first()


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


def as_dict(row: RowMapping) -> dict[str, Any]:
    return dict(row)


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
    return {row.session_id: row.leased_until for row in result}
