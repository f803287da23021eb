"""Card sessions: route an order to the best provider, create its hosted checkout, follow the
provider's webhooks to a final status.

Transactions (the service never commits the request's own):

- The request's transaction (``conn``) is begun first and, with an ``Idempotency-Key``, its
  first statement is the durable claim: a concurrent request with the same key waits on it
  and then replays the winner — it never reaches a provider.
- The session row, the routing decision and each attempt are written in short transactions of
  their own, committed *before* the provider call they describe: a process that dies mid-call
  leaves an attempt in ``creating`` with its provider idempotency key, and the orphan sweeper
  replays that key at the provider (same key → the same checkout, never a new one) and expires
  what it finds. Nothing a provider might hold goes unrecorded.
- The request's transaction then names the live attempt and enqueues ``card_session.created``;
  it commits with the idempotency record, so the 201 and its event exist together or not at all.

One live provider session per Pago session: the session's ``live_seq`` is set once (a
compare-and-set on NULL); an attempt that timed out may still have created a checkout at its
provider, which the sweeper expires, and any webhook of an attempt that is not the live one
is stored in the inbox and moves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.cards import repository
from pago.api.cards.domain import (
    RECONCILE_FIRST,
    STATUS_RANK,
    OrderInvalid,
    check_amounts,
    exponent_of,
    follow_up_due,
    format_minor,
    minor_amounts,
    next_reconcile,
    next_status,
)
from pago.api.cards.providers.base import (
    Address,
    Capabilities,
    CardOrder,
    CardProviderAdapter,
    InvalidSignature,
    OrderItem,
    ProviderError,
    ProviderNotification,
    ProviderRejected,
    ProviderStatus,
    ProviderTimeout,
    ProviderUnavailable,
    WebhookAck,
)
from pago.api.cards.repository import AttemptRow, SessionRow
from pago.api.cards.routing.model import (
    CandidateScore,
    Decision,
    FeeSchedule,
    Health,
    RouteStats,
    RoutingRules,
    Weights,
)
from pago.api.cards.routing.rules import InvalidRules, parse_rules
from pago.api.cards.routing.scorer import score
from pago.api.cards.schemas import (
    AddressIn,
    AmountOut,
    AttemptOut,
    CandidateOut,
    CardSessionOut,
    ComponentOut,
    CreateCardSessionRequest,
    CreatedCardSession,
    RoutingOut,
    RoutingSummary,
)
from pago.api.errors import (
    AuthenticationFailed,
    BadGateway,
    InvalidRequest,
    ResourceMissing,
    ServiceUnavailable,
)
from pago.api.oauth.principal import ClientPrincipal
from pago.common import topics
from pago.common.enums import CardProvider, CardSessionStatus, Mode
from pago.common.events import (
    CardAmountSnapshot,
    CardProviderEventReceived,
    CardSessionEvent,
    CardSessionEventType,
    CardSessionSnapshot,
)
from pago.common.outbox import OutboxMessage, enqueue

log = logging.getLogger(__name__)

EXPIRY_BATCH = 100
NO_RULES = RoutingRules()
SWEEP_BATCH = 20
RECONCILE_BATCH = 20


class RoutingSignals(Protocol):
    """What routing learns from and reads: the shared circuit breaker (Redis) and the outcome
    statistics (``card_route_stats``). Implemented over ``pago.api.cards.routing``."""

    async def health(self, providers: Sequence[CardProvider]) -> Mapping[CardProvider, Health]: ...

    async def acquire(self, provider: CardProvider) -> bool:
        """May a create call go to ``provider`` now (its breaker closed, or this caller the
        half-open probe)?"""
        ...

    async def record_call(self, provider: CardProvider, *, ok: bool, latency_ms: int) -> None: ...

    async def stats(
        self, conn: AsyncConnection, currency: str, country: str
    ) -> Mapping[CardProvider, RouteStats]: ...

    async def record_attempt(
        self, conn: AsyncConnection, provider: CardProvider, currency: str, country: str
    ) -> None: ...

    async def record_outcome(
        self,
        conn: AsyncConnection,
        provider: CardProvider,
        currency: str,
        country: str,
        outcome: CardSessionStatus,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CardConfig:
    deadline_seconds: float
    """``PAGO_CARD_CREATE_DEADLINE_SECONDS``: all create attempts of one request together."""
    ttl: timedelta
    """How long a session stays PENDING."""
    fees: Mapping[CardProvider, FeeSchedule]
    weights: Weights
    capabilities: Mapping[CardProvider, Capabilities] | None = None
    """What routing uses per provider (the adapters' own, with the deployment's overrides);
    ``None``: the adapters' own."""

    @property
    def orphan_age(self) -> timedelta:
        """An unsettled attempt older than this belongs to no running request any more."""
        return timedelta(seconds=2 * self.deadline_seconds + 30)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _event_id(*parts: str) -> str:
    """Stable across redeliveries of the same fact (consumers deduplicate on it)."""
    return "evt_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def provider_key(session_id: str, seq: int) -> str:
    """The provider idempotency key of attempt ``seq`` (≤ 64 characters, Adyen's limit)."""
    return f"pago-{session_id}-{seq}"


class CardSessionService:
    def __init__(
        self,
        engine: AsyncEngine,
        adapters: Mapping[CardProvider, CardProviderAdapter],
        signals: RoutingSignals,
        config: CardConfig,
        *,
        trace_engine: AsyncEngine | None = None,
    ) -> None:
        self._engine = engine
        self._trace = trace_engine or engine
        """The short transactions a create commits while its request's transaction stays open
        across the provider calls (the session row, each attempt). They need a second
        connection; from the request's own pool, N concurrent creates holding all of its
        connections would each wait for a second one until the pool timed out. Their own small
        pool only queues them: its connections are held for one statement's commit."""
        self._adapters = dict(adapters)
        self._signals = signals
        self._config = config
        caps = config.capabilities or {}
        self._capabilities = {
            name: caps.get(name, adapter.capabilities) for name, adapter in self._adapters.items()
        }

    # --- create ---------------------------------------------------------------------------

    async def create(
        self, conn: AsyncConnection, principal: ClientPrincipal, body: CreateCardSessionRequest
    ) -> CreatedCardSession:
        now = _now()
        session_id = str(uuid.uuid4())
        order = self._order(body, session_id, now + self._config.ttl)
        country = order.billing_address.country
        rules = await self._rules(conn, principal)
        stats = await self._signals.stats(conn, order.currency, country)
        health = await self._signals.health(list(self._adapters))
        decision = score(
            order,
            self._capabilities,
            stats=stats,
            health=health,
            fees=self._config.fees,
            rules=rules,
            weights=self._config.weights,
            session_id=session_id,
        )
        if not decision.ranked:
            reasons = "; ".join(f"{c.provider}: {c.reason}" for c in decision.rejected)
            raise InvalidRequest(
                f"No configured card provider can take this order ({reasons or 'none'}).",
                code="no_eligible_provider",
                param="currency",
            )
        async with self._trace.begin() as trace:
            await repository.insert_session(trace, _session_values(principal, order, body, now))
            await repository.insert_decision(
                trace,
                session_id,
                [_candidate_json(c) for c in decision.ranked],
                [_candidate_json(c) for c in decision.rejected],
                decision.rule,
                now,
            )
        try:
            live = await self._first_checkout(order, decision)
        except BadGateway:
            await self._fail(session_id)
            raise
        if live is None:
            await self._fail(session_id)
            raise ServiceUnavailable(
                "No card provider could create the checkout right now; retry shortly."
            )
        seq, candidate, reference, url = live
        row = await repository.make_live(
            conn,
            session_id,
            seq=seq,
            provider=candidate.provider,
            reference=reference,
            checkout_url=url,
            score=candidate.score,
            now=now,
        )
        # Conversion counts payers sent to a provider: only the live checkout, and only if the
        # 201 commits.
        await self._signals.record_attempt(conn, candidate.provider, order.currency, country)
        await enqueue(conn, [_session_message(row, "card_session.created", None, now)])
        return CreatedCardSession(
            session_id=session_id,
            checkout_url=url,
            status="PENDING",
            routing=RoutingSummary(selected_provider=candidate.provider, score=candidate.score),
            expires_at=row.expires_at,
            created_at=row.created_at,
        )

    async def _rules(self, conn: AsyncConnection, principal: ClientPrincipal) -> RoutingRules:
        """The merchant's rules in this mode, read fresh (one primary-key lookup on the request's
        connection), so ``pago-admin card-rules`` applies to the next create on every replica."""
        row = await repository.routing_rules(conn, principal.merchant_id, principal.mode)
        if row is None:
            return NO_RULES
        try:
            return parse_rules(pin=row.pin, exclude=row.exclude, split=row.split)
        except InvalidRules as exc:  # only a hand-edited row: pago-admin validates the same way
            log.error(
                "ignoring the card routing rules of %s (%s): %s",
                principal.merchant_id,
                principal.mode,
                exc,
            )
            return NO_RULES

    async def _fail(self, session_id: str) -> None:
        """No checkout was made: the session is FAILED (it was never shown to the merchant)."""
        async with self._trace.begin() as trace:
            await repository.set_status(
                trace,
                session_id,
                CardSessionStatus.FAILED,
                STATUS_RANK[CardSessionStatus.FAILED],
                _now(),
            )

    async def _first_checkout(
        self, order: CardOrder, decision: Decision
    ) -> tuple[int, CandidateScore, str, str] | None:
        """Try the ranked candidates in order within the deadline: the first checkout made."""
        deadline = time.monotonic() + self._config.deadline_seconds
        seq = 0
        for candidate in decision.ranked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            provider = candidate.provider
            if not await self._signals.acquire(provider):
                continue  # its breaker is open (or another replica holds the half-open probe)
            seq += 1
            key = provider_key(order.session_id, seq)
            async with self._trace.begin() as trace:
                await repository.insert_attempt(trace, order.session_id, seq, provider, key, _now())
            started = time.monotonic()
            status, error, checkout = "failed", None, None
            try:
                checkout = await asyncio.wait_for(
                    self._adapters[provider].create_checkout(order, idempotency_key=key),
                    remaining,
                )
                status = "created"
            except TimeoutError:
                status, error = "timed_out", "no answer within the create deadline"
            except ProviderTimeout as exc:
                # It may have created the checkout all the same: the sweeper settles it.
                status, error = "timed_out", exc.detail
            except ProviderUnavailable as exc:
                status, error = "failed", exc.detail
            except ProviderRejected as exc:
                await self._settle(order.session_id, seq, "rejected", started, error=exc.detail)
                await self._signals.record_call(provider, ok=True, latency_ms=_ms(started))
                raise BadGateway(f"{provider} refused the checkout: {exc.detail}") from None
            await self._settle(order.session_id, seq, status, started, error=error, made=checkout)
            await self._signals.record_call(
                provider, ok=checkout is not None, latency_ms=_ms(started)
            )
            if checkout is not None:
                return seq, candidate, checkout.reference, checkout.checkout_url
        return None

    async def _settle(
        self,
        session_id: str,
        seq: int,
        status: str,
        started: float,
        *,
        error: str | None = None,
        made: Any = None,
    ) -> None:
        async with self._trace.begin() as trace:
            await repository.finish_attempt(
                trace,
                session_id,
                seq,
                status=status,
                now=_now(),
                reference=made.reference if made is not None else None,
                checkout_url=made.checkout_url if made is not None else None,
                error=error,
                latency_ms=_ms(started),
            )

    def _order(
        self, body: CreateCardSessionRequest, session_id: str, expires_at: datetime
    ) -> CardOrder:
        exponent = exponent_of(body.currency)
        if exponent is None:
            raise InvalidRequest(
                f"{body.currency} is not an ISO 4217 currency with minor units.", param="currency"
            )
        items = body.order_items or []
        try:
            amounts = minor_amounts(
                body.amount.total,
                body.amount.shipping,
                body.amount.tax,
                [(item.unit_price, item.quantity) for item in items],
                exponent,
            )
            check_amounts(amounts, has_items=body.order_items is not None)
        except OrderInvalid as exc:
            raise InvalidRequest(exc.message, param=exc.param) from None
        customer = body.customer
        return CardOrder(
            session_id=session_id,
            order_reference=body.order_reference,
            currency=body.currency,
            exponent=exponent,
            total=amounts.total,
            shipping=amounts.shipping,
            tax=amounts.tax,
            items=[
                OrderItem(item.name, item.sku, item.quantity, price)
                for item, (price, _) in zip(items, amounts.items, strict=True)
            ],
            locale=body.locale,
            customer_email=customer.email,
            customer_first_name=customer.first_name,
            customer_last_name=customer.last_name,
            customer_phone=customer.phone,
            billing_address=_address(customer.billing_address),
            shipping_address=(
                _address(customer.shipping_address) if customer.shipping_address else None
            ),
            success_url=body.redirect_urls.success,
            failure_url=body.redirect_urls.failure,
            expires_at=expires_at,
        )

    # --- read -----------------------------------------------------------------------------

    async def get(
        self, conn: AsyncConnection, principal: ClientPrincipal, session_id: str
    ) -> CardSessionOut:
        try:
            uuid.UUID(session_id)
        except ValueError:
            raise _missing(session_id) from None
        row = await repository.find_session(conn, principal.merchant_id, principal.mode, session_id)
        if row is None:
            raise _missing(session_id)
        attempts = await repository.attempts_of(conn, session_id)
        decision = await repository.decision_of(conn, session_id)
        ranked = [_candidate_out(c) for c in decision.ranked] if decision else []
        live = next((c for c in ranked if c.provider == row.provider), None)
        return CardSessionOut(
            session_id=row.id,
            order_reference=row.order_reference,
            status=row.status,
            amount=AmountOut(
                currency=row.currency,
                exponent=row.exponent,
                total=format_minor(row.total, row.exponent),
                shipping=format_minor(row.shipping, row.exponent),
                tax=format_minor(row.tax, row.exponent),
            ),
            checkout_url=row.checkout_url,
            routing=RoutingOut(
                selected_provider=row.provider,
                score=row.score,
                components=live.components if live else [],
                candidates=ranked,
                rejected=[_candidate_out(c) for c in decision.rejected] if decision else [],
                rule=decision.rule if decision else None,
            ),
            attempts=[_attempt_out(a) for a in attempts],
            expires_at=row.expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # --- provider webhooks ----------------------------------------------------------------

    async def receive_webhook(
        self, provider_name: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookAck:
        """Verify, store, move the session — one transaction for all of a delivery's
        notifications — then the provider's follow-up (PayPal's capture) after the commit, for
        every notification of a live attempt whose session is still PENDING, a redelivery
        included. A follow-up that fails answers 503: the provider delivers again, and the
        follow-up (idempotent at the provider) runs again."""
        try:
            adapter = self._adapters[CardProvider(provider_name)]
        except (ValueError, KeyError):
            raise ResourceMissing(f"No card provider {provider_name[:40]!r}.") from None
        try:
            notifications = await adapter.parse_webhook(headers, body)
        except InvalidSignature as exc:
            raise AuthenticationFailed(
                f"The webhook signature does not verify: {exc.detail}"
            ) from None
        digest = hashlib.sha256(body).hexdigest()
        due: list[ProviderNotification] = []
        async with self._engine.begin() as conn:
            for notification in notifications:
                if await self._apply(conn, notification, digest, _now()):
                    due.append(notification)
        for notification in due:
            try:
                await adapter.on_notification(notification)
            except Exception:
                # Stored and committed already; nothing else would ever run this follow-up
                # (the reconciliation pass aside): the provider must come back.
                log.warning(
                    "card provider follow-up of %s failed", notification.event_type, exc_info=True
                )
                raise ServiceUnavailable(
                    f"The {provider_name} follow-up of this notification failed; deliver it again.",
                    code="provider_follow_up_failed",
                ) from None
        return adapter.webhook_ack()

    async def _apply(
        self, conn: AsyncConnection, note: ProviderNotification, digest: str, now: datetime
    ) -> bool:
        """Store ``note`` (first time only) and move its session by precedence; whether the
        adapter's follow-up is due for it (``domain.follow_up_due``)."""
        attempt = await repository.attempt_by_reference(conn, note.provider, note.reference)
        session_id = attempt.session_id if attempt else None
        stored = await repository.inbox_insert(
            conn,
            provider=note.provider,
            event_id=note.event_id,
            event_type=note.event_type,
            reference=note.reference,
            session_id=session_id,
            outcome=note.outcome,
            payload_sha256=digest,
            now=now,
        )
        session = None
        if attempt is not None:
            session = await repository.lock_session(conn, attempt.session_id)
        if stored:
            session = await self._record(conn, note, attempt, session, now)
        # A redelivery moves nothing, but its follow-up may still be owed (it failed before).
        return (
            attempt is not None
            and session is not None
            and follow_up_due(session.status, session.live_seq, attempt.seq)
        )

    async def _record(
        self,
        conn: AsyncConnection,
        note: ProviderNotification,
        attempt: AttemptRow | None,
        session: SessionRow | None,
        now: datetime,
    ) -> SessionRow | None:
        """A first-seen notification's events: the provider event, and the session's move."""
        session_id = attempt.session_id if attempt else None
        received = CardProviderEventReceived(
            event_id=_event_id("provider", note.provider, note.event_id),
            provider=note.provider,
            provider_event_id=note.event_id,
            provider_event_type=note.event_type,
            provider_reference=note.reference,
            session_id=session_id,
            outcome=note.outcome,
            received_at=now,
        )
        messages = [
            OutboxMessage.of(topics.CARD_PROVIDER_EVENTS, session_id or note.reference, received)
        ]
        if attempt is not None and session is not None:
            session, moved = await self._move(conn, session, attempt, note, now)
            messages += moved
        await enqueue(conn, messages)
        return session

    async def _move(
        self,
        conn: AsyncConnection,
        session: SessionRow,
        attempt: AttemptRow,
        note: ProviderNotification,
        now: datetime,
    ) -> tuple[SessionRow, list[OutboxMessage]]:
        """``session`` (locked) after ``note``, and the event of its move if it moved."""
        if session.live_seq != attempt.seq:
            log.info("ignoring %s for a superseded or orphan attempt", note.event_type)
            return session, []
        target = next_status(session.status, note.outcome)
        if target is session.status:
            return session, []
        if session.status is CardSessionStatus.PENDING:  # its terminal outcome, counted once
            await self._signals.record_outcome(
                conn, note.provider, session.currency, session.billing_country, target
            )
        moved = await repository.set_status(conn, session.id, target, STATUS_RANK[target], now)
        kind: CardSessionEventType = _EVENT_TYPES[target]
        return moved, [_session_message(moved, kind, session.status, now)]

    # --- background jobs ------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Expire PENDING sessions past ``expires_at`` (replicas split the work: SKIP LOCKED)."""
        now = _now()
        async with self._engine.begin() as conn:
            rows = await repository.due_for_expiry(conn, now, EXPIRY_BATCH)
            messages: list[OutboxMessage] = []
            for row in rows:
                rank = STATUS_RANK[CardSessionStatus.EXPIRED]
                moved = await repository.set_status(
                    conn, row.id, CardSessionStatus.EXPIRED, rank, now
                )
                if row.live_seq is not None and row.provider is not None:
                    # Shown to the merchant and sent to a provider: an unconverted payer.
                    await self._signals.record_outcome(
                        conn,
                        row.provider,
                        row.currency,
                        row.billing_country,
                        CardSessionStatus.EXPIRED,
                    )
                    messages.append(
                        _session_message(moved, "card_session.expired", row.status, now)
                    )
            await enqueue(conn, messages)
        return len(rows)

    async def sweep_orphans(self) -> int:
        """Settle attempts whose create may have left a checkout nobody was sent to: replay the
        attempt's provider idempotency key (the provider answers the checkout it made, if any),
        then expire it there."""
        swept = 0
        older = _now() - self._config.orphan_age
        async with self._engine.begin() as conn:
            for attempt, session in await repository.unsettled_attempts(conn, older, SWEEP_BATCH):
                adapter = self._adapters.get(attempt.provider)
                if adapter is None:
                    continue
                try:
                    made = await adapter.create_checkout(
                        _order_from(session), idempotency_key=attempt.idempotency_key
                    )
                    await adapter.expire(made.reference)
                except (ProviderUnavailable, ProviderRejected) as exc:
                    log.info("orphan attempt not settled yet: %s", exc.detail)
                    continue
                await repository.finish_attempt(
                    conn,
                    attempt.session_id,
                    attempt.seq,
                    status="orphan_expired",
                    now=_now(),
                    reference=made.reference if session.live_seq != attempt.seq else None,
                    checkout_url=made.checkout_url,
                )
                swept += 1
        return swept

    async def reconcile(self) -> int:
        """Ask the live provider about PENDING sessions the webhooks left unsettled: a lost
        webhook (the provider's status is final already) or a follow-up that failed (PayPal: an
        approved order is captured now). A final status is applied exactly as a webhook's would
        be — inbox, precedence, outbox events, route statistics, one transaction.

        Replicas split the work: the due sessions are claimed (SKIP LOCKED, and their next
        check pushed back by ``domain.next_reconcile``) in a short transaction of their own, so
        no row lock is held across the provider calls. Returns the sessions that moved."""
        now = _now()
        async with self._engine.begin() as conn:
            claimed = await repository.due_for_reconcile(
                conn, now, RECONCILE_FIRST, RECONCILE_BATCH
            )
            for row in claimed:
                await repository.set_reconcile_at(conn, row.id, next_reconcile(row.created_at, now))
        moved = 0
        for row in claimed:
            provider, reference = row.provider, row.provider_reference
            adapter = self._adapters.get(provider) if provider else None
            if adapter is None or provider is None or reference is None:
                continue
            try:
                status = await adapter.reconcile(reference)
            except ProviderError as exc:  # asked again at its next check
                log.info("card session %s not reconciled: %s", row.id, exc.detail)
                continue
            if status.outcome is None:
                continue
            note = reconciled_notification(provider, row.id, status, _now())
            async with self._engine.begin() as conn:
                # No follow-up owed any more: the session left PENDING (here or elsewhere).
                moved += not await self._apply(conn, note, _digest(status), _now())
        return moved

    async def run_jobs(self, interval_seconds: float, stopping: asyncio.Event) -> None:
        """The api lifespan's reconciliation, expiry and orphan sweep (idempotent across
        replicas). Reconciliation first: a session due for expiry gets its last check."""
        while not stopping.is_set():
            for job in (self.reconcile, self.expire_due, self.sweep_orphans):
                try:
                    await job()
                except Exception:
                    log.warning("card session job %s failed", job.__name__, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_seconds)

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()


_EVENT_TYPES: dict[CardSessionStatus, CardSessionEventType] = {
    CardSessionStatus.COMPLETED: "card_session.completed",
    CardSessionStatus.FAILED: "card_session.failed",
    CardSessionStatus.EXPIRED: "card_session.expired",
    CardSessionStatus.CANCELLED: "card_session.cancelled",
}


def reconciled_notification(
    provider: CardProvider, session_id: str, status: ProviderStatus, now: datetime
) -> ProviderNotification:
    """A provider status read, as the notification the inbox stores: one per reference and
    outcome (replicas, and a later read of the same final status, store it once)."""
    outcome = status.outcome.value if status.outcome else "none"
    return ProviderNotification(
        provider=provider,
        event_id=f"reconcile:{status.reference}:{outcome}",
        event_type=f"reconcile:{status.raw_status}",
        reference=status.reference,
        session_id=session_id,
        outcome=status.outcome,
        occurred_at=now,
    )


def _digest(status: ProviderStatus) -> str:
    return hashlib.sha256(f"{status.reference}\x1f{status.raw_status}".encode()).hexdigest()


def _ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


def _missing(session_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such card session: {session_id[:64]!r}.", param="sessionId")


def _address(value: AddressIn) -> Address:
    return Address(
        value.line1, value.line2, value.city, value.state, value.postal_code, value.country
    )


def _address_json(value: Address | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {
        "line1": value.line1,
        "line2": value.line2,
        "city": value.city,
        "state": value.state,
        "postalCode": value.postal_code,
        "country": value.country,
    }


def _session_values(
    principal: ClientPrincipal, order: CardOrder, body: CreateCardSessionRequest, now: datetime
) -> dict[str, Any]:
    order_data = {
        "locale": order.locale,
        "items": [
            {"name": i.name, "sku": i.sku, "quantity": i.quantity, "unitPrice": i.unit_price}
            for i in order.items
        ],
        "customer": {
            "firstName": order.customer_first_name,
            "lastName": order.customer_last_name,
            "email": order.customer_email,
            "phone": order.customer_phone,
            "billingAddress": _address_json(order.billing_address),
            "shippingAddress": _address_json(order.shipping_address),
        },
        "shipping": body.shipping.model_dump(by_alias=True) if body.shipping else None,
        "additionalInformation": body.additional_information,
        # Kept beside the columns so the sweeper can rebuild the exact order it sent.
        "successUrl": order.success_url,
        "failureUrl": order.failure_url,
    }
    return {
        "id": order.session_id,
        "merchant_id": principal.merchant_id,
        "mode": principal.mode.value,
        "client_id": principal.client_id,
        "order_reference": order.order_reference,
        "status": CardSessionStatus.PENDING.value,
        "status_rank": STATUS_RANK[CardSessionStatus.PENDING],
        "currency": order.currency,
        "exponent": order.exponent,
        "total": order.total,
        "shipping": order.shipping,
        "tax": order.tax,
        "billing_country": order.billing_address.country,
        "order_data": order_data,
        "success_url": order.success_url,
        "failure_url": order.failure_url,
        "expires_at": order.expires_at,
        "created_at": now,
        "updated_at": now,
    }


def _address_from(data: dict[str, Any] | None) -> Address | None:
    if data is None:
        return None
    return Address(
        data["line1"], data["line2"], data["city"], data["state"], data["postalCode"],
        data["country"],
    )  # fmt: skip


def _order_from(row: SessionRow) -> CardOrder:
    """The order exactly as the attempt sent it (a provider refuses a replayed key with
    another body), rebuilt from the stored row."""
    data = row.order_data
    customer = data["customer"]
    billing = _address_from(customer["billingAddress"])
    assert billing is not None  # noqa: S101 - stored from a validated order
    return CardOrder(
        session_id=row.id,
        order_reference=row.order_reference,
        currency=row.currency,
        exponent=row.exponent,
        total=row.total,
        shipping=row.shipping,
        tax=row.tax,
        items=[
            OrderItem(i["name"], i["sku"], int(i["quantity"]), int(i["unitPrice"]))
            for i in data["items"]
        ],
        locale=data["locale"],
        customer_email=customer["email"],
        customer_first_name=customer["firstName"],
        customer_last_name=customer["lastName"],
        customer_phone=customer["phone"],
        billing_address=billing,
        shipping_address=_address_from(customer["shippingAddress"]),
        success_url=data["successUrl"],
        failure_url=data["failureUrl"],
        expires_at=row.expires_at,
    )


def _candidate_json(candidate: CandidateScore) -> dict[str, Any]:
    return {
        "provider": candidate.provider.value,
        "eligible": candidate.eligible,
        "score": str(candidate.score),
        "reason": candidate.reason,
        "components": [
            {"name": c.name, "value": str(c.value), "weight": str(c.weight), "detail": c.detail}
            for c in candidate.components
        ],
    }


def _candidate_out(data: dict[str, Any]) -> CandidateOut:
    return CandidateOut(
        provider=CardProvider(data["provider"]),
        eligible=bool(data["eligible"]),
        score=Decimal(data["score"]),
        reason=data["reason"],
        components=[ComponentOut(**c) for c in data["components"]],
    )


def _attempt_out(row: AttemptRow) -> AttemptOut:
    return AttemptOut(
        seq=row.seq,
        provider=row.provider,
        status=row.status,
        reference=row.reference,
        error=row.error,
        latency_ms=row.latency_ms,
        created_at=row.created_at,
    )


def _snapshot(row: SessionRow) -> CardSessionSnapshot:
    return CardSessionSnapshot(
        session_id=row.id,
        order_reference=row.order_reference,
        status=row.status,
        amount=CardAmountSnapshot(
            currency=row.currency,
            exponent=row.exponent,
            total=row.total,
            shipping=row.shipping,
            tax=row.tax,
        ),
        provider=row.provider,
        provider_reference=row.provider_reference,
        checkout_url=row.checkout_url,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _session_message(
    row: SessionRow,
    kind: CardSessionEventType,
    previous: CardSessionStatus | None,
    now: datetime,
) -> OutboxMessage:
    event = CardSessionEvent(
        type=kind,
        event_id=_event_id("session", row.id, kind),
        session_id=row.id,
        merchant_id=row.merchant_id,
        mode=Mode(row.mode),
        occurred_at=now,
        previous_status=previous,
        session=_snapshot(row),
    )
    return OutboxMessage.of(topics.CARD_SESSIONS, row.id, event, kind)
