"""Apply a batch of observed transfers to the sessions they pay, in the caller's transaction.

Routing: a transfer already recorded stays with its session (its identity is unique in
Postgres); a new one goes to the session whose deposit address it was sent to — the payable
one if there is one, else the newest (a late payment to an address that is no longer live).
Finding and locking those sessions is one statement; the domain then decides each transfer in
the batch's order, and the book writes every decision at once. A transfer below its token's
minimum credit (chains registry) is never screened and moves no session: it is recorded in
``ignored_transfers`` for audit only. The batch's ``ChainScanned`` progress markers are written
in the same transaction, so a marker is stored only with every transfer before it. Nothing here
commits: the consumer commits, then acks.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.common.enums import ChainFamily, TransferStage
from pago.common.events import ChainScanned, TransferObserved
from pago.common.networks import DEFAULT_MIN_CREDIT, Registry, min_credit_units
from pago.common.sessions import chain_family
from pago.matcher import metrics, repository
from pago.matcher.aml.screener import Sender
from pago.matcher.book import SessionBook, TxMeta
from pago.matcher.domain import (
    AmlOutcome,
    AmlVerdict,
    Observation,
    apply_observation,
    below_min_credit,
)

log = logging.getLogger(__name__)

_CLEAR = AmlVerdict.clear()


def normalized_tx_hash(transfer: TransferObserved) -> str:
    """EVM and TRON transaction ids are hex, whose case carries nothing; Solana signatures are
    base58, whose case is the value. One spelling per transfer keeps the identity unique."""
    if chain_family(transfer.network) is ChainFamily.SOLANA:
        return transfer.tx_hash
    return transfer.tx_hash.lower()


def identity(transfer: TransferObserved) -> repository.TransferId:
    return (transfer.network.value, normalized_tx_hash(transfer), transfer.log_index)


def _address_key(transfer: TransferObserved) -> tuple[str, str, str]:
    return (transfer.network.value, transfer.mode.value, transfer.to_address.strip().lower())


def sender(transfer: TransferObserved) -> Sender:
    return (transfer.network, transfer.from_address)


def progress_rows(markers: Iterable[ChainScanned]) -> list[repository.ProgressWrite]:
    """The greatest marker per ``(network, mode, partition)`` of a batch (one row per key)."""
    best: dict[tuple[str, str, int], ChainScanned] = {}
    for m in markers:
        key = (m.network.value, m.mode.value, m.partition)
        held = best.get(key)
        if held is None or (m.block_time, m.block_number) > (held.block_time, held.block_number):
            best[key] = m
    return [
        repository.ProgressWrite(
            network=m.network.value,
            mode=m.mode.value,
            partition=m.partition,
            partitions=m.partitions,
            block_number=m.block_number,
            block_hash=m.block_hash,
            block_time=m.block_time,
        )
        for m in best.values()
    ]


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did; ``committed()`` records it once the transaction has committed."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(stage, result) → transfers."""
    invalid: Counter[str] = field(default_factory=Counter)
    book: SessionBook | None = None
    ignored: list[tuple[str, str]] = field(default_factory=list)
    """``(network, reason)`` of each transfer newly recorded as ignored (dust)."""

    def committed(self) -> None:
        for (stage, result), n in self.counts.items():
            metrics.TRANSFERS.labels(stage, result).inc(n)
        for reason, n in self.invalid.items():
            metrics.INVALID_TRANSFERS.labels(reason).inc(n)
        for (network, reason), n in Counter(self.ignored).items():
            metrics.IGNORED_TRANSFERS.labels(network, reason).inc(n)
        if self.book is not None:
            self.book.committed()


class TransferMatcher:
    def __init__(self, *, checkout_base_url: str, registry: Registry | None = None) -> None:
        self._base_url = checkout_base_url
        self._registry = registry

    def min_credit(self, transfer: TransferObserved) -> int:
        """The minimum credit of the transfer's token in base units: the registry's entry for
        its network × mode × token, else the default 0.01 token in the transfer's decimals."""
        spec = None
        if self._registry is not None:
            spec = self._registry.token(transfer.network, transfer.mode, transfer.token)
        if spec is not None and spec.decimals == transfer.decimals:
            return spec.min_credit_units
        return min_credit_units(DEFAULT_MIN_CREDIT, transfer.decimals)

    def is_dust(self, transfer: TransferObserved) -> bool:
        return below_min_credit(transfer.amount_raw, self.min_credit(transfer))

    def senders_to_screen(self, transfers: Iterable[TransferObserved]) -> list[Sender]:
        """The senders whose verdict the domain may read: only a confirmed transfer at or above
        its minimum credit can credit (or block), so dust is never screened."""
        return [
            sender(t)
            for t in transfers
            if t.stage is TransferStage.CONFIRMED and not self.is_dust(t)
        ]

    async def _lock_targets(
        self,
        conn: AsyncConnection,
        transfers: Sequence[TransferObserved],
        ids: Sequence[repository.TransferId],
    ) -> tuple[dict[repository.TransferId, str], dict[str, repository.SessionRow]]:
        """Lock the sessions the transfers pay and say which transfer pays which."""
        known = await repository.sessions_of_known_transfers(conn, ids)
        pending = [
            (t, transfer_id, _address_key(t))
            for t, transfer_id in zip(transfers, ids, strict=True)
            if transfer_id not in known
        ]
        rows = await repository.lock_targets(conn, known.values(), (k for _, _, k in pending))
        by_address: dict[tuple[str, str, str], list[repository.SessionRow]] = defaultdict(list)
        for row in rows.values():
            by_address[(row.network.value, row.mode.value, row.pay_address.lower())].append(row)
        target = dict(known)
        for t, transfer_id, key in pending:
            found = by_address.get(key, [])
            if chain_family(t.network) is not ChainFamily.EVM:
                found = [r for r in found if r.pay_address == t.to_address.strip()]
            if found:
                live = [r for r in found if not r.status.is_terminal]
                target[transfer_id] = max(live or found, key=lambda r: r.created_at).id
        return target, rows

    async def apply(
        self,
        conn: AsyncConnection,
        transfers: Sequence[TransferObserved],
        verdicts: Mapping[Sender, AmlVerdict],
        now: datetime,
        *,
        markers: Sequence[ChainScanned] = (),
    ) -> BatchOutcome:
        """Record and apply ``transfers`` (in order) within ``conn``'s open transaction, and
        the batch's progress ``markers`` with them.

        ``verdicts`` must screen the sender of every confirmed transfer at or above its minimum
        credit (:meth:`senders_to_screen`); a missing one counts as unavailable, so an
        unscreened transfer is held, never credited.
        """
        outcome = BatchOutcome()
        await repository.record_progress(conn, progress_rows(markers), now)
        if not transfers:
            return outcome
        ids = [identity(t) for t in transfers]
        target, rows = await self._lock_targets(conn, transfers, ids)
        book = await SessionBook.open(
            conn, rows, now=now, checkout_base_url=self._base_url, source="transfer"
        )
        outcome.book = book
        ignored: list[repository.IgnoredWrite] = []
        for transfer, transfer_id in zip(transfers, ids, strict=True):
            stage = transfer.stage.value
            session_id = target.get(transfer_id)
            if session_id is None or session_id not in book.sessions:
                outcome.counts[(stage, "unknown_address")] += 1
                continue
            session = book.sessions[session_id]
            if (
                transfer.token is session.state.token
                and transfer.decimals != session.state.decimals
            ):
                # Same token, other decimals: a registry mismatch would credit 10^k times too
                # much or too little. Keep it out and loud; the record stays in Kafka to replay.
                outcome.invalid["decimals_mismatch"] += 1
                log.error(
                    "transfer decimals differ from the session's token decimals; not applied",
                    extra={"session_id": session_id, "transfer": transfer_id},
                )
                continue
            observation = Observation(
                tx_hash=transfer_id[1],
                log_index=transfer.log_index,
                token=transfer.token,
                amount=transfer.amount_raw,
                from_address=transfer.from_address,
                stage=transfer.stage,
                confirmations=transfer.confirmations,
                block_time=transfer.block_time,
            )
            min_credit = self.min_credit(transfer)
            verdict = _CLEAR
            if transfer.stage is TransferStage.CONFIRMED and not below_min_credit(
                transfer.amount_raw, min_credit
            ):
                verdict = verdicts.get(sender(transfer), AmlVerdict.unavailable())
            before = session.state.tx(observation.key)
            decision = apply_observation(
                session.state, observation, verdict, now, session.policy, min_credit=min_credit
            )
            if decision.ignored is not None:
                outcome.counts[(stage, "ignored")] += 1
                ignored.append(
                    repository.IgnoredWrite(
                        network=transfer_id[0],
                        mode=transfer.mode.value,
                        tx_hash=transfer_id[1],
                        log_index=transfer.log_index,
                        session_id=session_id,
                        token=transfer.token.value,
                        from_address=transfer.from_address,
                        amount_raw=transfer.amount_raw,
                        decimals=transfer.decimals,
                        stage=stage,
                        reason=decision.ignored.value,
                        observed_at=transfer.observed_at,
                    )
                )
                continue
            if not decision.changed:
                outcome.counts[(stage, "duplicate")] += 1
                continue
            meta = TxMeta(
                network=transfer_id[0],
                contract=transfer.contract,
                decimals=transfer.decimals,
                block_number=transfer.block_number,
                block_hash=transfer.block_hash,
                created_at=now,
            )
            book.apply(session, decision, meta=meta)
            if (
                before is not None  # only a transfer recorded earlier can be on hold
                and transfer.stage is TransferStage.CONFIRMED
                and decision.tx is not None
                and verdict.outcome is not AmlOutcome.UNAVAILABLE
            ):
                book.note_screened(transfer_id, verdict.outcome.value)
            outcome.counts[(stage, "applied")] += 1
        await book.flush(conn)
        # One row per identity in a statement (ON CONFLICT cannot touch a row twice).
        unique: dict[repository.TransferId, repository.IgnoredWrite] = {}
        for row in ignored:
            unique.setdefault((row.network, row.tx_hash, row.log_index), row)
        outcome.ignored = await repository.insert_ignored(conn, list(unique.values()))
        return outcome
