"""Payment exceptions for the authenticated merchant, and operators' resolutions of them.

The api records a resolution; the matcher applies it. Deciding what an acceptance does to a
session is the matcher domain's ``resolve_exception`` (a late full payment makes the session
Paid, with its fee, and emits ``session.resolved``), and the api — which must not import
another service — would otherwise have to copy that rule. So ``resolve`` commits the request
(``requested_action``) in its own transaction, then waits a few seconds for the matcher's
resolution worker to apply it under the session lock: 200 with the outcome when it did, 409
``resolution_rejected`` when the domain refused it, or 202 with the request still pending.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.auth.principal import Principal
from pago.api.errors import ResourceMissing, StateConflict
from pago.api.payment_exceptions import repository
from pago.api.payment_exceptions.schemas import (
    PaymentException,
    PaymentExceptionList,
    ResolveAction,
    ResolveRequest,
)
from pago.api.sessions.schemas import ListMeta
from pago.common.enums import ExceptionKind, ExceptionStatus, Mode, Network, Token
from pago.common.money import format_units

_ID = re.compile(r"pex_[A-Za-z0-9]{1,60}")

_OUTCOME: dict[ResolveAction, ExceptionStatus] = {
    ResolveAction.ACCEPT: ExceptionStatus.ACCEPTED,
    ResolveAction.REFUND_REQUESTED: ExceptionStatus.REFUND_REQUESTED,
    ResolveAction.DISMISS: ExceptionStatus.DISMISSED,
}
"""The status a case ends in once the matcher applied the action."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int = 1
    page_size: int = 20
    statuses: tuple[ExceptionStatus, ...] = ()
    kinds: tuple[ExceptionKind, ...] = ()
    networks: tuple[Network, ...] = ()
    session_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def scope_of(principal: Principal) -> repository.Scope:
    return repository.Scope(
        merchant_id=principal.merchant.id,
        mode=principal.mode.value,
        sub_merchant_id=principal.sub_merchant.id if principal.sub_merchant else None,
    )


def to_schema(row: RowMapping) -> PaymentException:
    token = row["token"]
    return PaymentException(
        id=row["id"],
        livemode=Mode(row["mode"]) is Mode.LIVE,
        session_id=row["session_id"],
        kind=ExceptionKind(row["kind"]),
        status=ExceptionStatus(row["status"]),
        network=Network(row["network"]),
        tx_hash=row["tx_hash"],
        log_index=int(row["log_index"]),
        amount=format_units(int(row["amount"]), int(row["decimals"])),
        currency=Token(token) if token else None,
        detail=row["detail"],
        requested_action=ResolveAction(row["requested_action"])
        if row["requested_action"]
        else None,
        resolution_note=row["resolution_note"],
        resolution_error=row["resolution_error"],
        created_at=row["created_at"].astimezone(UTC),
        resolved_at=row["resolved_at"].astimezone(UTC) if row["resolved_at"] else None,
    )


def _missing(exception_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such payment exception: {exception_id[:80]!r}.", param="id")


@dataclass(frozen=True, slots=True)
class Resolution:
    status_code: int
    """200 applied, 202 still waiting for the matcher."""
    exception: PaymentException


class PaymentExceptionService:
    def __init__(self, *, resolve_wait: float = 5.0, poll_interval: float = 0.05) -> None:
        self._wait = resolve_wait
        self._poll = poll_interval

    async def list(
        self, conn: AsyncConnection, principal: Principal, query: ListQuery
    ) -> PaymentExceptionList:
        f = repository.ExceptionFilter(
            scope=scope_of(principal),
            statuses=tuple(s.value for s in query.statuses),
            kinds=tuple(k.value for k in query.kinds),
            networks=tuple(n.value for n in query.networks),
            session_id=query.session_id,
            created_after=query.created_after,
            created_before=query.created_before,
        )
        total = await repository.count(conn, f)
        offset = (query.page - 1) * query.page_size
        rows = (
            await repository.page(conn, f, limit=query.page_size, offset=offset)
            if offset < total
            else []
        )
        return PaymentExceptionList(
            data=[to_schema(r) for r in rows],
            meta=ListMeta(
                total=total,
                page=query.page,
                page_size=query.page_size,
                total_pages=math.ceil(total / query.page_size),
            ),
        )

    async def get(
        self, conn: AsyncConnection, principal: Principal, exception_id: str
    ) -> PaymentException:
        return to_schema(await self._find(conn, principal, exception_id))

    async def _find(
        self,
        conn: AsyncConnection,
        principal: Principal,
        exception_id: str,
        *,
        for_update: bool = False,
    ) -> RowMapping:
        row = None
        if _ID.fullmatch(exception_id):
            row = await repository.get(
                conn, exception_id, scope_of(principal), for_update=for_update
            )
        if row is None:
            raise _missing(exception_id)
        return row

    async def resolve(
        self,
        engine: AsyncEngine,
        principal: Principal,
        exception_id: str,
        request: ResolveRequest,
    ) -> Resolution:
        async with engine.begin() as conn:
            row = await self._find(conn, principal, exception_id, for_update=True)
            settled = _settled(row, request.action)
            if settled is not None:
                return settled
            await repository.request_resolution(
                conn, exception_id, request.action.value, request.note, datetime.now(UTC)
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            async with engine.connect() as conn:
                row = await self._find(conn, principal, exception_id)
            if row["status"] != ExceptionStatus.OPEN:
                return Resolution(200, to_schema(row))
            if row["requested_action"] is None and row["resolution_error"]:
                raise StateConflict(
                    f"The {row['kind']} case cannot be resolved with {request.action.value!r}: "
                    f"{row['resolution_error']}",
                    code="resolution_rejected",
                    param="action",
                )
            if loop.time() >= deadline:
                return Resolution(202, to_schema(row))
            await asyncio.sleep(self._poll)


def _settled(row: RowMapping, action: ResolveAction) -> Resolution | None:
    """The answer when the request needs no new work, or raise when it cannot be taken."""
    status = ExceptionStatus(row["status"])
    if status is not ExceptionStatus.OPEN:
        if status is _OUTCOME[action]:
            return Resolution(200, to_schema(row))  # a retry of what was done
        raise StateConflict(
            f"This payment exception is already {status.value}.",
            code="exception_already_resolved",
        )
    pending: Any = row["requested_action"]
    if pending is not None and pending != action.value:
        raise StateConflict(
            f"A {pending!r} resolution of this payment exception is still being applied.",
            code="resolution_in_progress",
        )
    return None
