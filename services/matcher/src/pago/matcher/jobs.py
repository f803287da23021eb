"""The matcher's periodic work beside the consumer: expiry, resolutions, AML re-screening.

Each job is one function doing one bounded pass in its own transaction(s), safe to run on
several replicas at once; :func:`run_periodically` repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common.enums import TransferStage
from pago.common.events import TransferObserved
from pago.matcher import domain, metrics, repository
from pago.matcher.aml.screener import Screener
from pago.matcher.book import SessionBook
from pago.matcher.domain import AmlOutcome, ResolutionAction, TransferKey
from pago.matcher.service import TransferMatcher, sender

log = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0
"""Seconds between two attempts of a periodic job that keeps failing, at most."""


async def chain_times(conn: AsyncConnection) -> dict[tuple[str, str], datetime]:
    """Per ``(network, mode)``, the block time up to which every partition's transfers are
    consumed (only those whose every partition has a progress marker)."""
    by_chain = await repository.chain_progress(conn)
    times = {key: domain.chain_time(progress) for key, progress in by_chain.items()}
    return {key: t for key, t in times.items() if t is not None}


async def expire_due(
    engine: AsyncEngine,
    *,
    now: datetime,
    limit: int,
    checkout_base_url: str,
    grace: timedelta = domain.DEFAULT_EXPIRY_GRACE,
) -> int:
    """Expire up to ``limit`` sessions the domain's ``expiry_due`` lets go; return how many.

    A session past ``expires_at`` expires only once the chain is proven silent for it (every
    partition's progress marker of its network × mode is past ``expires_at`` and no payment seen
    before ``expires_at`` is still in flight), or ``grace`` after ``expires_at`` regardless.

    Compare-and-set against a concurrent payment: the sessions are taken with ``FOR UPDATE
    SKIP LOCKED`` (one the consumer holds is skipped, so its payment wins), re-read under the
    lock, decided by the domain's ``expire`` and written only if their version did not move.
    """
    async with engine.begin() as conn:
        times = await chain_times(conn)
        rows = await repository.lock_expiring_sessions(
            conn, now, limit, grace=grace, chain_times=times
        )
        if not rows:
            return 0
        book = await SessionBook.open(
            conn, rows, now=now, checkout_base_url=checkout_base_url, source="expiry"
        )
        lags: list[tuple[str, str, float]] = []
        for session in book.sessions.values():
            before = session.state
            chain = times.get((session.network.value, session.mode.value))
            decision = domain.expire(before, now, chain_time=chain, grace=grace)
            if decision is not None:
                book.apply(session, decision)
                lags.append(
                    (
                        session.network.value,
                        session.mode.value,
                        (now - before.expires_at).total_seconds(),
                    )
                )
        await book.flush(conn)
    book.committed()
    metrics.SESSIONS_EXPIRED.inc(len(lags))
    for network, mode, lag in lags:
        metrics.EXPIRY_LAG.labels(network, mode).observe(lag)
    return len(lags)


async def apply_requested_resolutions(
    engine: AsyncEngine, *, now: datetime, limit: int, checkout_base_url: str
) -> int:
    """Apply up to ``limit`` resolutions requested through the Resolution API.

    The api records the operator's intent (``requested_action``); the decision is the domain's
    ``resolve_exception``, made here, under the session lock, so the rule lives in one place.
    Locks follow the house order — session, then the exception — and the exception is
    re-checked under its lock, so two replicas never apply one request twice.
    """
    async with engine.connect() as conn:
        waiting = await repository.requested_resolutions(conn, limit)
    done = 0
    for exception_id, session_id in waiting:
        async with engine.begin() as conn:
            applied = await _resolve_one(conn, exception_id, session_id, now, checkout_base_url)
        if applied is not None:
            book, action = applied
            book.committed()
            metrics.RESOLUTIONS.labels(action.value, "applied").inc()
            done += 1
    return done


async def _resolve_one(
    conn: AsyncConnection, exception_id: str, session_id: str, now: datetime, base_url: str
) -> tuple[SessionBook, ResolutionAction] | None:
    rows = await repository.lock_sessions(conn, [session_id])
    case = await repository.lock_requested_exception(conn, exception_id)
    if case is None or session_id not in rows:
        return None  # applied by another replica meanwhile
    action, kind = case.requested_action, case.kind
    book = await SessionBook.open(
        conn, rows, now=now, checkout_base_url=base_url, source="resolution"
    )
    session = book.sessions[session_id]
    try:
        decision = domain.resolve_exception(
            session.state,
            kind,
            TransferKey(case.tx_hash, case.log_index),
            action,
            now,
            session.policy,
        )
    except domain.ResolutionError as exc:
        # The case stays open with the reason; the api shows it to the operator.
        await repository.reject_resolution(conn, exception_id, str(exc))
        metrics.RESOLUTIONS.labels(action.value, "rejected").inc()
        return None
    book.apply(session, decision, exception_ids={kind: exception_id})
    await book.flush(conn)
    await repository.finish_resolution(conn, exception_id, action.exception_status, now)
    return book, action


async def rescreen_held(
    engine: AsyncEngine,
    screener: Screener,
    matcher: TransferMatcher,
    *,
    now: datetime,
    limit: int,
) -> int:
    """Screen again the transfers held as ``aml_unavailable``, and decide those now screened.

    The consumer committed past them (they are recorded and held), so no redelivery will bring
    them back; this pass replays each as the ``confirmed`` observation it was, through the same
    matcher. Still no answer → they stay held; a verdict → credited or blocked as usual, and
    the hold is closed.
    """
    async with engine.connect() as conn:
        rows = await repository.held_transfers(conn, limit)
        metrics.AML_HELD.set(await repository.count_held(conn))
    if not rows:
        return 0
    transfers = [
        TransferObserved(
            network=r.network,
            mode=r.mode,
            token=r.token,
            contract=r.contract,
            tx_hash=r.tx_hash,
            log_index=r.log_index,
            block_number=r.block_number,
            block_hash=r.block_hash,
            from_address=r.from_address,
            to_address=r.pay_address,
            amount_raw=r.amount,
            decimals=r.decimals,
            confirmations=r.confirmations,
            stage=TransferStage.CONFIRMED,
            observed_at=now,
            block_time=r.block_time,
        )
        for r in rows
    ]
    verdicts = await screener.screen_many(sender(t) for t in transfers)
    ready = [t for t in transfers if verdicts[sender(t)].outcome is not AmlOutcome.UNAVAILABLE]
    if not ready:
        return 0
    async with engine.begin() as conn:
        outcome = await matcher.apply(conn, ready, verdicts, now)
    outcome.committed()
    log.info("re-screened held transfers", extra={"decided": len(ready), "held": len(rows)})
    return len(ready)


async def run_periodically(
    name: str,
    job: Callable[[], Awaitable[int]],
    *,
    interval: float,
    full: int | None,
    stopping: asyncio.Event,
) -> None:
    """Run ``job`` every ``interval`` seconds until ``stopping``; at once again while it
    reports a full batch (``full``), and with a doubling delay (up to a minute) while it
    fails."""
    delay = interval
    while not stopping.is_set():
        try:
            done = await job()
            delay = 0.0 if full is not None and done >= full else interval
        except Exception:
            log.exception("periodic job failed; retrying", extra={"job": name})
            delay = min(max(delay, interval) * 2, _MAX_BACKOFF)
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
        else:
            await asyncio.sleep(0)
