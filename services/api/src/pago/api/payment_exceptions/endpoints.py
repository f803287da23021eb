"""HTTP routes of the Resolution API: parse, call one service method, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator
from starlette.responses import Response

from pago.api.dependencies import CurrentPrincipal, IdempotencyKey, State, Transaction
from pago.api.errors import error_responses
from pago.api.pagination import Page, PageSize
from pago.api.payment_exceptions.schemas import (
    PaymentException,
    PaymentExceptionList,
    ResolveRequest,
)
from pago.api.payment_exceptions.service import ListQuery
from pago.api.responses import REPLAYED_DOC, json_response
from pago.api.validation import SafeStr, UpperCase, UtcDatetime
from pago.common.enums import ExceptionKind, ExceptionStatus, Network

router = APIRouter(prefix="/v1/payment_exceptions", tags=["Payment Exceptions"])

ExceptionId = Annotated[
    str, Path(description="The exception id (`pex_…`).", examples=["pex_5b0f6c3e9a2d41b7c8e9f0a1"])
]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


@router.get(
    "",
    response_model=PaymentExceptionList,
    summary="List payment exceptions",
    operation_id="listPaymentExceptions",
    responses=error_responses(400, 401, 429, 500),
)
async def list_payment_exceptions(
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    page: Page = 1,
    page_size: Annotated[PageSize, Query(description="Exceptions per page.")] = 20,
    status: Annotated[
        list[Annotated[ExceptionStatus, BeforeValidator(_lower)]] | None,
        Query(description="Repeat to match any of several statuses."),
    ] = None,
    kind: Annotated[
        list[Annotated[ExceptionKind, BeforeValidator(_lower)]] | None,
        Query(description="Repeat to match any of several kinds."),
    ] = None,
    network: Annotated[
        list[Annotated[Network, UpperCase]] | None,
        Query(description="Repeat to match any of several networks."),
    ] = None,
    session_id: Annotated[
        SafeStr | None, Query(max_length=64, description="Only this session's exceptions.")
    ] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="RFC 3339 or unix seconds; exclusive.")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="RFC 3339 or unix seconds; exclusive.")
    ] = None,
) -> Response:
    """Newest first (`created_at` desc, then `id` desc)."""
    query = ListQuery(
        page=page,
        page_size=page_size,
        statuses=tuple(status or ()),
        kinds=tuple(kind or ()),
        networks=tuple(network or ()),
        session_id=session_id,
        created_after=created_after,
        created_before=created_before,
    )
    return json_response(await state.payment_exceptions.list(conn, principal, query))


@router.get(
    "/{id}",
    response_model=PaymentException,
    summary="Retrieve a payment exception",
    operation_id="getPaymentException",
    responses=error_responses(401, 404, 429, 500),
)
async def get_payment_exception(
    id: ExceptionId, principal: CurrentPrincipal, state: State, conn: Transaction
) -> Response:
    return json_response(await state.payment_exceptions.get(conn, principal, id))


@router.post(
    "/{id}/resolve",
    response_model=PaymentException,
    summary="Resolve a payment exception",
    operation_id="resolvePaymentException",
    responses={
        200: {"description": "The action was applied.", "headers": REPLAYED_DOC},
        202: {
            "description": "The action is recorded and the matcher has not applied it yet "
            "(`requested_action` is set); retrieve the exception again shortly.",
            "model": PaymentException,
        },
        **error_responses(400, 401, 404, 409, 429, 500),
    },
)
async def resolve_payment_exception(
    id: ExceptionId,
    body: ResolveRequest,
    principal: CurrentPrincipal,
    state: State,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """`accept` keeps the money: an accepted late payment is credited, and one that covers the
    amount makes the session `Paid` (with its fee) and emits `session.resolved`; accepting any
    other kind leaves the session as it is. `refund_requested` and `dismiss` close the case.
    An open case only (409 `exception_already_resolved`, `resolution_in_progress`, or
    `resolution_rejected` when the action does not fit the session)."""
    outcome = await state.payment_exceptions.resolve(state.engine, principal, id, body)
    return json_response(outcome.exception, outcome.status_code)
