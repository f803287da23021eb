"""HTTP routes of card sessions (seed 003) and the card providers' webhooks: parse, call one
service method, return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from starlette.responses import Response

from pago.api.cards.parsing import parse_request
from pago.api.cards.schemas import CardSessionOut, CreateCardSessionRequest, CreatedCardSession
from pago.api.cards.service import CardSessionService
from pago.api.dependencies import State, Transaction
from pago.api.errors import (
    InvalidRequest,
    ParameterMissing,
    ResourceMissing,
    ServiceUnavailable,
    error_responses,
)
from pago.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from pago.api.idempotency import MAX_KEY_LENGTH
from pago.api.oauth.dependencies import SessionsRead, SessionsWrite
from pago.api.responses import REPLAYED_DOC
from pago.api.state import ApiState

router = APIRouter(prefix="/api/v1", tags=["Card Sessions"])

Writer = SessionsWrite
Reader = SessionsRead


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The request model's JSON schema with its ``$defs`` inlined (none is recursive), so the
    OpenAPI document has no reference to components it does not declare."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _inlined(CreateCardSessionRequest.model_json_schema(by_alias=True))
            }
        },
    }
}


def _cards(state: ApiState) -> CardSessionService:
    if state.cards is None:
        raise ServiceUnavailable("No card provider is configured on this server.")
    return state.cards


def _json(model: CreatedCardSession | CardSessionOut, status_code: int) -> Response:
    return Response(
        model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json"
    )


@router.post(
    "/sessions",
    status_code=201,
    response_model=CreatedCardSession,
    summary="Create a card checkout session",
    operation_id="createCardSession",
    openapi_extra=_BODY,
    responses={
        201: {
            "description": "The session, PENDING at the routed provider.",
            "headers": REPLAYED_DOC,
        },
        **error_responses(400, 401, 403, 409, 413, 429, 500, 502, 503),
    },
)
async def create_card_session(
    request: Request,
    principal: Writer,
    state: State,
    conn: Transaction,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="Required, ≤ 255 characters. The same key and body replay the stored "
            "201 (`Idempotency-Replayed: true`); another body → 409 `idempotency_conflict`; "
            "still running → 409 `request_in_progress`. A concurrent duplicate never reaches a "
            "provider.",
        ),
    ] = None,
) -> Response:
    """Score the configured card providers for the order, create the hosted checkout at the
    best one (failing over on timeout, 5xx or 429 within the create deadline) and return its
    URL with the routing decision.

    Amounts are JSON numbers (or decimal strings) read exactly, never through a float, and must
    fit the currency's ISO 4217 minor units; with `orderItems`, Σ `unitPrice` × `quantity` +
    `shipping` + `tax` must equal `total`."""
    if idempotency_key is None:
        raise ParameterMissing(
            f"Missing required header: {IDEMPOTENCY_HEADER}.", param=IDEMPOTENCY_HEADER
        )
    if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} characters long.",
            param=IDEMPOTENCY_HEADER,
        )
    body = parse_request(await request.body())
    created = await _cards(state).create(conn, principal, body)
    return _json(created, 201)


@router.get(
    "/sessions/{sessionId}",
    response_model=CardSessionOut,
    summary="Retrieve a card checkout session",
    operation_id="getCardSession",
    responses=error_responses(401, 403, 404, 429, 500, 503),
)
async def get_card_session(
    session_id: Annotated[str, Path(alias="sessionId", max_length=64)],
    principal: Reader,
    state: State,
    conn: Transaction,
) -> Response:
    """The session's status, amounts (decimal strings in the currency's minor-unit digits),
    routing decision with its components, and every provider attempt."""
    return _json(await _cards(state).get(conn, principal, session_id), 200)


@router.post(
    "/webhooks/{provider}",
    summary="Receive a card provider's webhook",
    operation_id="receiveCardProviderWebhook",
    include_in_schema=True,
    responses={200: {"description": "Accepted (the body the provider expects)."},
               **error_responses(401, 404, 413, 500, 503)},
)  # fmt: skip
async def receive_provider_webhook(
    provider: Annotated[str, Path(max_length=32)], request: Request, state: State
) -> Response:
    """Verified with the provider's own scheme (Stripe-Signature, Adyen HMAC, PayPal
    verification); no merchant auth. Deduplicated, stored and applied in one transaction."""
    if state.cards is None:  # no provider is configured: none of them has a webhook here
        raise ResourceMissing(f"No card provider {provider!r} is configured.", param="provider")
    headers = {k.lower(): v for k, v in request.headers.items()}
    ack = await state.cards.receive_webhook(provider, headers, await request.body())
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)
