"""HTTP routes of Checkout Sessions: parse, call one service method, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator
from starlette.responses import Response

from pago.api.dependencies import CurrentPrincipal, IdempotencyKey, State, Transaction
from pago.api.errors import error_responses
from pago.api.pagination import Page, PageSize
from pago.api.responses import EXISTING_DOC, EXISTING_HEADER, REPLAYED_DOC, json_response
from pago.api.sessions.schemas import CreateSessionRequest, SessionList
from pago.api.sessions.service import ListQuery
from pago.api.validation import SafeStr, UpperCase, UtcDatetime
from pago.common.enums import Network, SessionStatus
from pago.common.events import SessionSnapshot

router = APIRouter(prefix="/v1/checkout/sessions", tags=["Checkout Sessions"])

SessionId = Annotated[
    str, Path(description="The session id (`cs_…`).", examples=["cs_3f9a1c2b7d4e5f60718293a4"])
]


def _status(value: object) -> object:
    """Statuses in any letter case (``pending`` → ``Pending``)."""
    if isinstance(value, str):
        for status in SessionStatus:
            if status.value.lower() == value.lower():
                return status.value
    return value


StatusParam = Annotated[SessionStatus, BeforeValidator(_status)]
NetworkParam = Annotated[Network, UpperCase]


@router.post(
    "",
    status_code=201,
    response_model=SessionSnapshot,
    summary="Create a checkout session",
    operation_id="createCheckoutSession",
    responses={
        201: {
            "description": "The new session (status `Pending`) — or, with the merchant's "
            "duplicate-order guard on (the default), the existing session of this "
            "`client_reference_id` on the same network and currency (any status but `Expired`; "
            "`Pago-Existing-Session: true`).",
            "headers": {**REPLAYED_DOC, **EXISTING_DOC},
        },
        **error_responses(400, 401, 409, 410, 413, 429, 500, 503),
    },
)
async def create_session(
    body: CreateSessionRequest,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Price the payment, lease a deposit address and open a session for `expires_at`
    (creation + the merchant's expiry minutes, 30 by default).

    Duplicate-order guard (per merchant, on by default): a `client_reference_id` that already
    has a session of this merchant (or sub-merchant), mode, network and currency answers that
    session instead — or 410 `session_expired` if it expired. `Idempotency-Key` is checked
    first."""
    created = await state.sessions.create(conn, principal, body)
    response = json_response(created.session, 201)
    if created.existing:
        response.headers[EXISTING_HEADER] = "true"
    return response


@router.get(
    "",
    response_model=SessionList,
    summary="List checkout sessions",
    operation_id="listCheckoutSessions",
    responses=error_responses(400, 401, 429, 500),
)
async def list_sessions(
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    page: Page = 1,
    page_size: Annotated[PageSize, Query(description="Sessions per page.")] = 20,
    status: Annotated[
        list[StatusParam] | None,
        Query(description="Repeat to match any of several statuses."),
    ] = None,
    network: Annotated[
        list[NetworkParam] | None,
        Query(description="Repeat to match any of several networks."),
    ] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="RFC 3339 or unix seconds; exclusive.")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="RFC 3339 or unix seconds; exclusive.")
    ] = None,
    search_text: Annotated[
        SafeStr | None,
        Query(
            max_length=255,
            description="Exact session id, transaction hash, pay address or client_reference_id.",
        ),
    ] = None,
    include_sub_merchants: Annotated[
        bool, Query(description="Also list the sessions of every sub-merchant.")
    ] = False,
    sub_merchant_code: Annotated[
        SafeStr | None, Query(max_length=64, description="Only this sub-merchant's sessions.")
    ] = None,
) -> Response:
    """Newest first (`created_at` desc, then `id` desc)."""
    query = ListQuery(
        page=page,
        page_size=page_size,
        statuses=tuple(status or ()),
        networks=tuple(network or ()),
        created_after=created_after,
        created_before=created_before,
        search_text=search_text.strip() if search_text else None,
        include_sub_merchants=include_sub_merchants,
        sub_merchant_code=sub_merchant_code,
    )
    return json_response(await state.sessions.list(conn, principal, query))


@router.get(
    "/{id}",
    response_model=SessionSnapshot,
    summary="Retrieve a checkout session",
    operation_id="getCheckoutSession",
    responses=error_responses(401, 404, 429, 500),
)
async def get_session(
    id: SessionId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
) -> Response:
    return json_response(await state.sessions.get(conn, principal, id))


@router.post(
    "/{id}/expire",
    response_model=SessionSnapshot,
    summary="Expire a pending checkout session",
    operation_id="expireCheckoutSession",
    responses={
        200: {"description": "The session, now `Expired`.", "headers": REPLAYED_DOC},
        **error_responses(401, 404, 409, 429, 500, 503),
    },
)
async def expire_session(
    id: SessionId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Only a `Pending` session can be expired (otherwise 409 `session_not_pending`)."""
    return json_response(await state.sessions.expire(conn, principal, id))
