"""Business rules of Checkout Sessions. Never commits: the request does, once, at the end.

Creating a session writes, in the caller's transaction: the deposit-address lease, the session
row, ``session.created`` (``checkout.sessions``, key = session id) and ``WatchAddress``
(``chain.watchlist``, key = ``{network}:{mode}:{address}``) into the outbox.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api import ids
from pago.api.addresses import service as addresses
from pago.api.addresses.codec import AddressError, normalize_address
from pago.api.auth.principal import Principal
from pago.api.errors import InvalidRequest, InvalidSubMerchantCode, ResourceMissing, StateConflict
from pago.api.pricing.service import PricingService
from pago.api.sessions import repository
from pago.api.sessions.repository import ListFilter, Scope, SessionRecord
from pago.api.sessions.schemas import CreateSessionRequest, ListMeta, SessionList
from pago.api.sessions.snapshot import build_snapshot
from pago.common.enums import ChainFamily, Network, SessionStatus
from pago.common.events import SessionCreated, SessionSnapshot, SessionUpdated, WatchAddress
from pago.common.networks import Registry
from pago.common.outbox import OutboxMessage, enqueue
from pago.common.topics import CHAIN_WATCHLIST, CHECKOUT_SESSIONS, watchlist_key


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int = 1
    page_size: int = 20
    statuses: tuple[SessionStatus, ...] = ()
    networks: tuple[Network, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    search_text: str | None = None
    include_sub_merchants: bool = False
    sub_merchant_code: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def scope_of(principal: Principal) -> Scope:
    return Scope(
        merchant_id=principal.merchant.id,
        mode=principal.mode.value,
        sub_merchant_id=principal.sub_merchant.id if principal.sub_merchant else None,
    )


class SessionService:
    def __init__(
        self,
        *,
        registry: Registry,
        pricing: PricingService,
        checkout_base_url: str,
        watch_grace: timedelta,
    ) -> None:
        self._registry = registry
        self._pricing = pricing
        self._base_url = checkout_base_url
        self._watch_grace = watch_grace

    def snapshot(
        self, record: SessionRecord, transactions: list[repository.TransactionRecord]
    ) -> SessionSnapshot:
        return build_snapshot(record, transactions, checkout_base_url=self._base_url)

    async def create(
        self, conn: AsyncConnection, principal: Principal, body: CreateSessionRequest
    ) -> SessionSnapshot:
        mode = principal.mode
        token = self._registry.token(body.network, mode, body.currency)
        if token is None:
            raise InvalidRequest(
                f"{body.currency} is not available on {body.network} in {mode} mode.",
                param="currency",
            )
        quote = await self._pricing.quote(body.pricing_currency, body.pricing_amount, token)
        family = self._registry.network(body.network).family
        # Microseconds are what Postgres keeps: the response must equal a later read.
        now = _now()
        expires_at = now + timedelta(minutes=principal.merchant.session_expiry_minutes)
        watch_until = expires_at + self._watch_grace
        session_id = ids.session_id()
        allocation = await addresses.allocate(
            conn,
            merchant_id=principal.merchant.id,
            family=family,
            mode=mode,
            session_id=session_id,
            leased_until=watch_until,
            now=now,
        )
        sub = principal.sub_merchant
        record = SessionRecord(
            id=session_id,
            merchant_id=principal.merchant.id,
            sub_merchant_id=sub.id if sub else None,
            sub_merchant_code=sub.code if sub else None,
            merchant_name=principal.merchant.name,
            merchant_logo_url=principal.merchant.logo_url,
            mode=mode.value,
            status=SessionStatus.PENDING,
            network=body.network,
            currency=token.symbol.value,
            currency_contract=token.contract,
            decimals=token.decimals,
            amount_expected=quote.units,
            amount_received=0,
            fee_amount=0,
            net_amount=0,
            pay_address=allocation.address,
            client_reference_id=body.client_reference_id,
            pricing_currency=body.pricing_currency,
            pricing_amount=body.pricing_amount,
            exchange_rate=quote.rate,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            expires_at=expires_at,
            created_at=now,
        )
        await repository.insert_session(conn, record)
        snapshot = self.snapshot(record, [])
        created = SessionCreated(
            event_id=ids.event_id(),
            session_id=session_id,
            merchant_id=principal.merchant.id,
            mode=mode,
            occurred_at=now,
            session=snapshot,
        )
        watch = WatchAddress(
            network=body.network,
            mode=mode,
            address=allocation.address,
            session_id=session_id,
            watch_until=watch_until,
            # The watcher back-fills from the block at this time, however late this record
            # reaches it (a lagging outbox relay or broker).
            created_at=now,
        )
        await enqueue(
            conn,
            [
                OutboxMessage.of(CHECKOUT_SESSIONS, session_id, created, created.type),
                OutboxMessage.of(
                    CHAIN_WATCHLIST,
                    watchlist_key(body.network.value, mode.value, allocation.address),
                    watch,
                ),
            ],
        )
        return snapshot

    async def get(
        self, conn: AsyncConnection, principal: Principal, session_id: str
    ) -> SessionSnapshot:
        record = await self._find(conn, principal, session_id)
        transactions = await repository.transactions_of(conn, [record.id])
        return self.snapshot(record, transactions.get(record.id, []))

    async def list(
        self, conn: AsyncConnection, principal: Principal, query: ListQuery
    ) -> SessionList:
        scope = scope_of(principal)
        if query.sub_merchant_code is not None:
            sub_id = await repository.sub_merchant_id(
                conn, principal.merchant.id, query.sub_merchant_code
            )
            if sub_id is None:
                raise InvalidSubMerchantCode(
                    f"No sub-merchant with code {query.sub_merchant_code!r} under this merchant.",
                    param="sub_merchant_code",
                )
            if scope.sub_merchant_id not in (None, sub_id):
                return _page([], 0, query)  # acting as one sub-merchant, asking for another
            scope = replace(scope, sub_merchant_id=sub_id)
        f = ListFilter(
            scope=scope,
            parent_only=not query.include_sub_merchants,
            statuses=tuple(s.value for s in query.statuses),
            networks=tuple(n.value for n in query.networks),
            created_after=query.created_after,
            created_before=query.created_before,
            search=_search_terms(query.search_text),
        )
        total = await repository.count_sessions(conn, f)
        offset = (query.page - 1) * query.page_size
        records = (
            await repository.list_sessions(conn, f, limit=query.page_size, offset=offset)
            if offset < total
            else []
        )
        transactions = await repository.transactions_of(conn, [r.id for r in records])
        data = [self.snapshot(r, transactions.get(r.id, [])) for r in records]
        return _page(data, total, query)

    async def expire(
        self, conn: AsyncConnection, principal: Principal, session_id: str
    ) -> SessionSnapshot:
        record = await self._find(conn, principal, session_id, for_update=True)
        if record.status is not SessionStatus.PENDING or not await repository.mark_expired(
            conn, session_id, _now()
        ):
            raise StateConflict(
                f"Only a Pending session can be expired; this one is {record.status}.",
                code="session_not_pending",
            )
        now = _now()
        expired = replace(record, status=SessionStatus.EXPIRED)
        transactions = await repository.transactions_of(conn, [session_id])
        snapshot = self.snapshot(expired, transactions.get(session_id, []))
        updated = SessionUpdated(
            event_id=ids.event_id(),
            session_id=session_id,
            merchant_id=record.merchant_id,
            mode=principal.mode,
            occurred_at=now,
            session=snapshot,
            previous_status=SessionStatus.PENDING,
        )
        await enqueue(
            conn, [OutboxMessage.of(CHECKOUT_SESSIONS, session_id, updated, updated.type)]
        )
        return snapshot

    async def find_for_helper(
        self, conn: AsyncConnection, principal: Principal, session_id: str
    ) -> SessionRecord:
        return await self._find(conn, principal, session_id)

    async def _find(
        self,
        conn: AsyncConnection,
        principal: Principal,
        session_id: str,
        *,
        for_update: bool = False,
    ) -> SessionRecord:
        record = None
        if _SESSION_ID.fullmatch(session_id):
            record = await repository.get_session(
                conn, session_id, scope_of(principal), for_update=for_update
            )
        if record is None:
            raise _missing(session_id)
        return record


_SESSION_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


def _missing(session_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such checkout session: {session_id[:80]!r}.", param="id")


def _page(data: list[SessionSnapshot], total: int, query: ListQuery) -> SessionList:
    return SessionList(
        data=data,
        meta=ListMeta(
            total=total,
            page=query.page,
            page_size=query.page_size,
            total_pages=math.ceil(total / query.page_size),
        ),
    )


def _search_terms(text: str | None) -> tuple[str, ...]:
    """The exact values a search matches; an EVM address also in its checksummed form."""
    if not text:
        return ()
    terms = [text]
    try:
        checksummed = normalize_address(ChainFamily.EVM, text.lower())
    except AddressError:
        return tuple(terms)
    if checksummed != text:
        terms.append(checksummed)
    return tuple(terms)
