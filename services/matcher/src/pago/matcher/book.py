"""A unit of work over locked sessions: apply the domain's decisions, then write them at once.

The consumer, the expiry scheduler and the resolution worker all load the sessions they lock
into a :class:`SessionBook`, feed it the domain's :class:`~pago.matcher.domain.Decision` values
one by one (a session's state threads through several decisions in one batch), and ``flush``
it inside their transaction: transaction rows, session rows (compare-and-set on ``version``),
deposit-address leases, payment exceptions and the outbox events, in that order, each as one
statement.

Leases: a session that reaches a terminal status starts its address's cool-down (the api
re-leases a pool address only after it); a session whose ``expires_at`` an Underpaid payment
extended gets its lease moved by as much, and a new ``WatchAddress`` with the lease's new end,
so the watcher keeps watching for the rest of the payment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, localcontext
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common import events
from pago.common.enums import ExceptionKind, Mode, Network
from pago.common.money import PRECISION, ceil_units
from pago.common.outbox import OutboxMessage, enqueue
from pago.common.sessions import (
    SessionTemplate,
    chain_family,
    session_template,
    transaction_snapshot,
)
from pago.common.topics import CHECKOUT_SESSIONS
from pago.common.watchlist import DEFAULT_WATCH_GRACE, watch_address
from pago.matcher import domain, metrics, repository
from pago.matcher.domain import Decision, Policy, SessionState, TransferKey, TxRecord

log = logging.getLogger(__name__)


class SessionBookError(RuntimeError):
    """A write that must not happen (a session version moved under a lock we hold)."""


def event_id(session_id: str, version: int, event_type: str) -> str:
    """``evt_…`` fixed by the session version that produced the event: the same change always
    has the same id, and an event is written once because the version commits with it."""
    digest = hashlib.sha256(f"{session_id}:{version}:{event_type}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def exception_id(kind: ExceptionKind, network: str, tx_hash: str, log_index: int) -> str:
    """``pex_…`` fixed by the case's identity (one case per kind and transfer)."""
    digest = hashlib.sha256(f"{kind.value}:{network}:{tx_hash}:{log_index}".encode()).hexdigest()
    return f"pex_{digest[:24]}"


def policy_for(merchant: repository.MerchantRow, decimals: int) -> Policy:
    """The merchant's overrides (whole tokens in the row) over the house defaults, in base
    units of a ``decimals`` token. A tolerance rounds down and a fee floor up: both err on the
    side of not giving money away."""
    base = Policy.defaults(decimals)
    tolerance: int | None = None
    if merchant.underpayment_tolerance is not None:
        with localcontext(prec=PRECISION):
            tolerance = int(
                merchant.underpayment_tolerance.scaleb(decimals).to_integral_value(ROUND_FLOOR)
            )
    floor, rate = merchant.fee_floor, merchant.fee_rate
    return Policy(
        underpayment_tolerance=base.underpayment_tolerance if tolerance is None else tolerance,
        fee_floor=base.fee_floor if floor is None else ceil_units(floor, decimals),
        underpaid_extension=timedelta(minutes=merchant.underpaid_extension_minutes),
        fee_rate=base.fee_rate if rate is None else rate,
    )


@dataclass(frozen=True, slots=True)
class TxMeta:
    """What a transaction row stores beyond the domain's :class:`TxRecord`."""

    network: str
    contract: str
    decimals: int
    block_number: int
    block_hash: str
    created_at: datetime


def tx_record(row: repository.TransactionRow) -> TxRecord:
    return TxRecord(
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        token=row.token,
        amount=row.amount,
        from_address=row.from_address,
        status=row.status,
        credited=row.credited,
        confirmations=row.confirmations,
        aml_flags=row.aml_flags,
        block_time=row.block_time,
    )


def tx_meta(row: repository.TransactionRow) -> TxMeta:
    return TxMeta(
        network=row.network,
        contract=row.contract,
        decimals=row.decimals,
        block_number=row.block_number,
        block_hash=row.block_hash,
        created_at=row.created_at,
    )


def session_state(
    row: repository.SessionRow, transactions: Iterable[repository.TransactionRow]
) -> SessionState:
    return SessionState(
        id=row.id,
        status=row.status,
        token=row.currency,
        decimals=row.decimals,
        amount_expected=row.amount_expected,
        expires_at=row.expires_at,
        amount_received=row.amount_received,
        fee_amount=row.fee_amount,
        net_amount=row.net_amount,
        transactions=tuple(tx_record(t) for t in transactions),
        timed_out=row.timed_out,
    )


_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(repository.SessionRow))


def _template(
    row: repository.SessionRow,
    merchant: repository.MerchantRow,
    *,
    checkout_base_url: str,
    sub_merchant_code: str | None,
) -> SessionTemplate:
    # The shared builder reads rows by column name; once per session, at its first event.
    return session_template(
        {name: getattr(row, name) for name in _SESSION_FIELDS},
        merchant={"name": merchant.name, "logo_url": merchant.logo_url},
        checkout_base_url=checkout_base_url,
        sub_merchant_code=sub_merchant_code,
    )


_YIELD_EVERY = 64
"""Events serialized between two chances for the row writes to move on."""


@dataclass(slots=True)
class OpenSession:
    """One locked session while its book is open."""

    row: repository.SessionRow
    """As read under the lock (``state`` and ``version`` move on from it)."""
    state: SessionState
    version: int
    merchant: repository.MerchantRow
    sub_merchant_code: str | None
    policy: Policy
    meta: dict[TransferKey, TxMeta]
    dirty_txs: dict[TransferKey, TxRecord] = field(default_factory=dict)
    template: SessionTemplate | None = None
    """The unchanging part of its session object, made at its first event."""
    tx_snapshots: dict[TxRecord, events.TransactionSnapshot] = field(default_factory=dict)
    dirty: bool = False

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def network(self) -> Network:
        return self.row.network

    @property
    def mode(self) -> Mode:
        return self.row.mode


@dataclass(frozen=True, slots=True)
class _PendingEvent:
    """A domain event of ``session`` at ``version``, to be written to the outbox at flush."""

    session: OpenSession
    version: int
    state: SessionState
    event: domain.DomainEvent
    exception_ids: Mapping[ExceptionKind, str]


class SessionBook:
    def __init__(
        self,
        sessions: dict[str, OpenSession],
        *,
        now: datetime,
        checkout_base_url: str,
        source: str,
    ) -> None:
        self.sessions = sessions
        self._now = now
        self._base_url = checkout_base_url
        self._source = source
        """Label of who decided (consumer, expiry, resolution), for metrics."""
        self._exceptions: dict[tuple[str, str, int], repository.ExceptionWrite] = {}
        self._events: list[_PendingEvent] = []
        self._aml_decided: dict[repository.TransferId, str] = {}
        self._start_status = {sid: s.state.status for sid, s in sessions.items()}
        self._opened: list[str] = []
        self._watches: list[OutboxMessage] = []

    @classmethod
    async def open(
        cls,
        conn: AsyncConnection,
        rows: Mapping[str, repository.SessionRow],
        *,
        now: datetime,
        checkout_base_url: str,
        source: str,
    ) -> SessionBook:
        """Build a book over session rows the caller has locked in ``conn``."""
        txs = await repository.transactions_of(conn, rows)
        merchants = await repository.merchants(conn, (r.merchant_id for r in rows.values()))
        codes = await repository.sub_merchant_codes(
            conn, (r.sub_merchant_id for r in rows.values())
        )
        policies: dict[tuple[str, int], Policy] = {}
        sessions: dict[str, OpenSession] = {}
        for sid, row in rows.items():
            policy_key = (row.merchant_id, row.decimals)
            if policy_key not in policies:
                policies[policy_key] = policy_for(merchants[row.merchant_id], row.decimals)
            session_txs = txs.get(sid, [])
            sessions[sid] = OpenSession(
                row=row,
                state=session_state(row, session_txs),
                version=row.version,
                merchant=merchants[row.merchant_id],
                sub_merchant_code=codes.get(row.sub_merchant_id) if row.sub_merchant_id else None,
                policy=policies[policy_key],
                meta={TransferKey(t.tx_hash, t.log_index): tx_meta(t) for t in session_txs},
            )
        return cls(sessions, now=now, checkout_base_url=checkout_base_url, source=source)

    def apply(
        self,
        session: OpenSession,
        decision: Decision,
        *,
        meta: TxMeta | None = None,
        exception_ids: Mapping[ExceptionKind, str] | None = None,
    ) -> None:
        """Take ``decision`` (made on ``session.state``) into the book.

        ``meta`` describes the transfer behind ``decision.tx`` when the book has not seen it
        (a new transfer); a known one keeps its stored block, contract and first-seen time.
        """
        if not decision.changed:
            return
        if decision.tx is not None:
            key = decision.tx.key
            if key not in session.meta:
                if meta is None:
                    raise SessionBookError(f"no row details for new transfer {key}")
                session.meta[key] = meta
            elif meta is not None:
                # A re-mined transfer lands in another block; keep where it is now.
                session.meta[key] = dataclasses.replace(
                    meta, created_at=session.meta[key].created_at
                )
            session.dirty_txs[key] = decision.tx
        for raised in decision.exceptions:
            tx_meta_ = session.meta[raised.key]
            pex_id = exception_id(raised.kind, tx_meta_.network, raised.tx_hash, raised.log_index)
            self._exceptions[(raised.kind.value, raised.tx_hash, raised.log_index)] = (
                repository.ExceptionWrite(
                    id=pex_id,
                    session_id=session.id,
                    merchant_id=session.row.merchant_id,
                    mode=session.mode.value,
                    kind=raised.kind.value,
                    network=tx_meta_.network,
                    tx_hash=raised.tx_hash,
                    log_index=raised.log_index,
                    token=raised.token.value,
                    amount=raised.amount,
                    decimals=tx_meta_.decimals,
                    detail=raised.detail,
                    created_at=self._now,
                )
            )
        if decision.events:
            session.version += 1
            session.dirty = True
            self._events.extend(
                _PendingEvent(session, session.version, decision.state, event, exception_ids or {})
                for event in decision.events
            )
        session.state = decision.state

    def note_screened(self, transfer: repository.TransferId, outcome: str) -> None:
        """``transfer`` was decided with a real screening: close a pending AML hold on it."""
        self._aml_decided[transfer] = f"screened after the provider recovered: {outcome}"

    def _envelope(self, session: OpenSession, state: SessionState) -> dict[str, Any]:
        return {
            "session_id": session.id,
            "merchant_id": session.row.merchant_id,
            "mode": session.mode,
            "occurred_at": self._now,
            "session": self.snapshot(session, state),
        }

    def _message(self, pending: _PendingEvent) -> OutboxMessage | None:
        session, version, state = pending.session, pending.version, pending.state
        wire: (
            events.SessionUpdated
            | events.SessionPaymentDetected
            | events.SessionPaymentReverted
            | events.SessionResolved
        )
        match pending.event:
            case domain.SessionUpdated(state=after, previous_status=previous):
                wire = events.SessionUpdated(
                    event_id=event_id(session.id, version, "session.updated"),
                    previous_status=previous,
                    **self._envelope(session, after),
                )
            case domain.PaymentDetected(tx=tx):
                wire = events.SessionPaymentDetected(
                    event_id=event_id(session.id, version, "session.payment_detected"),
                    tx_hash=tx.tx_hash,
                    **self._envelope(session, state),
                )
            case domain.PaymentReverted(tx=tx):
                wire = events.SessionPaymentReverted(
                    event_id=event_id(session.id, version, "session.payment_reverted"),
                    tx_hash=tx.tx_hash,
                    log_index=tx.log_index,
                    **self._envelope(session, state),
                )
            case domain.SessionResolved(kind=kind, tx_hash=tx_hash, log_index=log_index):
                network = session.meta[TransferKey(tx_hash, log_index)].network
                wire = events.SessionResolved(
                    event_id=event_id(session.id, version, "session.resolved"),
                    exception_id=pending.exception_ids.get(kind)
                    or exception_id(kind, network, tx_hash, log_index),
                    exception_kind=kind,
                    tx_hash=tx_hash,
                    log_index=log_index,
                    **self._envelope(session, state),
                )
            case domain.SessionBlocked() | domain.SessionExpired():
                # The SessionUpdated of the same decision carries the Blocked/Expired status;
                # the notifier derives session.blocked / session.expired from it.
                return None
            case unknown:
                raise SessionBookError(f"unknown domain event {unknown!r}")
        return OutboxMessage.of(CHECKOUT_SESSIONS, session.id, wire, wire.type)

    def snapshot(self, session: OpenSession, state: SessionState) -> events.SessionSnapshot:
        """The API's session object for ``state`` (not yet written) of ``session``."""
        if session.template is None:
            session.template = _template(
                session.row,
                session.merchant,
                checkout_base_url=self._base_url,
                sub_merchant_code=session.sub_merchant_code,
            )
        return session.template.snapshot(
            status=state.status,
            amount_received=state.amount_received,
            fee_amount=state.fee_amount,
            net_amount=state.net_amount,
            expires_at=state.expires_at,
            transactions=[self._tx_snapshot(session, tx) for tx in state.transactions],
        )

    @staticmethod
    def _tx_snapshot(session: OpenSession, tx: TxRecord) -> events.TransactionSnapshot:
        # A record is immutable and its row details are fixed per transfer, so one snapshot
        # serves every event that lists it.
        cached = session.tx_snapshots.get(tx)
        if cached is None:
            meta = session.meta[tx.key]
            cached = session.tx_snapshots[tx] = transaction_snapshot(
                {
                    "tx_hash": tx.tx_hash,
                    "amount": tx.amount,
                    "decimals": meta.decimals,
                    "network": meta.network,
                    "status": tx.status,
                    "confirmations": tx.confirmations,
                    "from_address": tx.from_address,
                    "created_at": meta.created_at,
                }
            )
        return cached

    async def flush(self, conn: AsyncConnection) -> None:
        """Write everything the book took, in the caller's transaction."""
        tx_rows: list[repository.TransactionWrite] = []
        session_rows: list[repository.SessionWrite] = []
        for session in self.sessions.values():
            for key, tx in session.dirty_txs.items():
                meta = session.meta[key]
                tx_rows.append(
                    repository.TransactionWrite(
                        session_id=session.id,
                        network=meta.network,
                        tx_hash=tx.tx_hash,
                        log_index=tx.log_index,
                        token=tx.token.value,
                        contract=meta.contract,
                        amount=tx.amount,
                        decimals=meta.decimals,
                        from_address=tx.from_address,
                        block_number=meta.block_number,
                        block_hash=meta.block_hash,
                        status=tx.status.value,
                        credited=tx.credited,
                        confirmations=tx.confirmations,
                        aml_flags=tx.aml_flags,
                        block_time=tx.block_time,
                    )
                )
            if session.dirty:
                state = session.state
                session_rows.append(
                    repository.SessionWrite(
                        id=session.id,
                        expected_version=session.row.version,
                        status=state.status.value,
                        amount_received=state.amount_received,
                        fee_amount=state.fee_amount,
                        net_amount=state.net_amount,
                        expires_at=state.expires_at,
                        version=session.version,
                        timed_out=state.timed_out,
                    )
                )
        # The rows go to Postgres while this process turns the events into outbox messages
        # (a third of a batch's CPU): the two overlap instead of taking turns.
        writes = asyncio.ensure_future(self._write(conn, tx_rows, session_rows))
        try:
            messages = await self._messages_of(self._events)
        finally:
            await writes  # never leave a statement of this transaction running
        await enqueue(conn, messages + self._watches)

    async def _write(
        self,
        conn: AsyncConnection,
        tx_rows: list[repository.TransactionWrite],
        session_rows: list[repository.SessionWrite],
    ) -> None:
        await repository.upsert_transactions(conn, tx_rows, self._now)
        written = await repository.update_sessions(conn, session_rows, self._now)
        if len(written) != len(session_rows):
            missed = sorted({r.id for r in session_rows} - written)
            raise SessionBookError(f"sessions changed under our lock: {missed}")
        await self._write_leases(conn)
        self._opened = await repository.insert_exceptions(conn, list(self._exceptions.values()))
        await repository.close_aml_holds(conn, self._aml_decided, self._now)

    def _lease_changes(self) -> tuple[list[repository.AddressLease], list[repository.AddressLease]]:
        """(sessions that ended, sessions still payable whose ``expires_at`` moved later)."""
        ended: list[repository.AddressLease] = []
        extended: list[repository.AddressLease] = []
        for sid, session in self.sessions.items():
            if not session.dirty:
                continue
            lease = repository.AddressLease(
                session_id=sid,
                family=chain_family(session.network).value,
                mode=session.mode.value,
                address=session.row.pay_address,
                previous_expires_at=session.row.expires_at,
                expires_at=session.state.expires_at,
            )
            live_before = not self._start_status[sid].is_terminal
            live_now = not session.state.status.is_terminal
            if live_before and not live_now:
                ended.append(lease)
            elif live_now and lease.expires_at > lease.previous_expires_at:
                extended.append(lease)
        return ended, extended

    async def _write_leases(self, conn: AsyncConnection) -> None:
        ended, extended = self._lease_changes()
        await repository.release_addresses(conn, ended, self._now)
        leased_until = await repository.extend_leases(conn, extended)
        self._watches = [
            watch_address(
                network=self.sessions[x.session_id].network,
                mode=self.sessions[x.session_id].mode,
                address=x.address,
                session_id=x.session_id,
                # No lease row (a session the api did not allocate): the default grace.
                watch_until=leased_until.get(x.session_id, x.expires_at + DEFAULT_WATCH_GRACE),
                created_at=self.sessions[x.session_id].row.created_at,
            )
            for x in extended
        ]

    async def _messages_of(self, pending: list[_PendingEvent]) -> list[OutboxMessage]:
        messages = []
        for i, event in enumerate(pending):
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the writes send their next statement
            message = self._message(event)
            if message is not None:
                messages.append(message)
        return messages

    def committed(self) -> None:
        """Count what the flushed transaction did, once it has committed."""
        for kind in self._opened:
            metrics.PAYMENT_EXCEPTIONS.labels(kind).inc()
            if kind == ExceptionKind.REVERTED_CREDIT:
                metrics.REVERTED_CREDITS.inc()
                log.error("a credited transfer was reverted by a reorg: a human must look at it")
        moved = Counter(
            s.state.status.value
            for sid, s in self.sessions.items()
            if s.state.status is not self._start_status[sid]
        )
        for status, n in moved.items():
            metrics.SESSION_TRANSITIONS.labels(self._source, status).inc(n)
