"""HTTP routes of webhook endpoints: parse, call one service method, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response

from pago.api.dependencies import (
    CurrentPrincipal,
    IdempotencyKey,
    State,
    Transaction,
    redact_secret,
)
from pago.api.errors import error_responses
from pago.api.pagination import Page, PageSize
from pago.api.responses import REPLAYED_DOC, json_response
from pago.api.validation import SafeStr
from pago.api.webhook_endpoints.repository import DeliveryFilter
from pago.api.webhook_endpoints.schemas import (
    CreateEndpointRequest,
    DeletedEndpoint,
    DeliveryList,
    EndpointList,
    UpdateEndpointRequest,
    WebhookDelivery,
    WebhookDeliveryDetail,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)
from pago.common.enums import DeliveryStatus

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["Webhook Endpoints"])

EndpointId = Annotated[
    str, Path(description="The endpoint id (`we_…`).", examples=["we_3f9a1c2b7d4e5f60718293a4"])
]
DeliveryId = Annotated[
    str, Path(description="The delivery id (`wd_…`).", examples=["wd_3f9a1c2b7d4e5f60718293a4"])
]


@router.post(
    "",
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    summary="Create a webhook endpoint",
    operation_id="createWebhookEndpoint",
    dependencies=[Depends(redact_secret)],
    responses={
        201: {
            "description": "The endpoint and its secret (shown once: an idempotent replay "
            "shows `secret` redacted).",
            "headers": REPLAYED_DOC,
        },
        **error_responses(400, 401, 409, 413, 429, 500, 503),
    },
)
async def create_endpoint(
    body: CreateEndpointRequest,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Webhooks of the key's mode go to `url`, signed with the returned `whsec_…` secret."""
    return json_response(await state.webhook_endpoints.create(conn, principal, body), 201)


@router.get(
    "",
    response_model=EndpointList,
    summary="List webhook endpoints",
    operation_id="listWebhookEndpoints",
    responses=error_responses(400, 401, 429, 500),
)
async def list_endpoints(
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    page: Page = 1,
    page_size: PageSize = 20,
) -> Response:
    return json_response(
        await state.webhook_endpoints.list(conn, principal, page=page, page_size=page_size)
    )


@router.get(
    "/{id}",
    response_model=WebhookEndpoint,
    summary="Retrieve a webhook endpoint",
    operation_id="getWebhookEndpoint",
    responses=error_responses(401, 404, 429, 500),
)
async def get_endpoint(
    id: EndpointId, principal: CurrentPrincipal, state: State, conn: Transaction
) -> Response:
    return json_response(await state.webhook_endpoints.get(conn, principal, id))


@router.post(
    "/{id}",
    response_model=WebhookEndpoint,
    summary="Update a webhook endpoint",
    operation_id="updateWebhookEndpoint",
    responses=error_responses(400, 401, 404, 409, 413, 429, 500, 503),
)
async def update_endpoint(
    id: EndpointId,
    body: UpdateEndpointRequest,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Change the URL, the events or the description; disable or re-enable the endpoint."""
    return json_response(await state.webhook_endpoints.update(conn, principal, id, body))


@router.delete(
    "/{id}",
    response_model=DeletedEndpoint,
    summary="Delete a webhook endpoint",
    operation_id="deleteWebhookEndpoint",
    responses=error_responses(401, 404, 429, 500),
)
async def delete_endpoint(
    id: EndpointId, principal: CurrentPrincipal, state: State, conn: Transaction
) -> Response:
    """No more webhooks go to it; its pending deliveries are closed as failed."""
    return json_response(await state.webhook_endpoints.delete(conn, principal, id))


@router.post(
    "/{id}/rotate_secret",
    response_model=WebhookEndpointWithSecret,
    summary="Rotate a webhook endpoint's secret",
    operation_id="rotateWebhookEndpointSecret",
    dependencies=[Depends(redact_secret)],
    responses={
        200: {
            "description": "The endpoint and its new secret (shown once: an idempotent replay "
            "shows `secret` redacted).",
            "headers": REPLAYED_DOC,
        },
        **error_responses(401, 404, 409, 429, 500, 503),
    },
)
async def rotate_secret(
    id: EndpointId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A new secret signs from now on; the old one keeps signing beside it for 24 h
    (`webhook-signature` carries both, `X-Signature-Previous` the old one's)."""
    return json_response(await state.webhook_endpoints.rotate_secret(conn, principal, id))


@router.post(
    "/{id}/ping",
    status_code=202,
    response_model=WebhookDelivery,
    summary="Send a test webhook",
    operation_id="pingWebhookEndpoint",
    responses={
        202: {"description": "A `webhook.ping` delivery, due now.", "headers": REPLAYED_DOC},
        **error_responses(401, 404, 409, 429, 500, 503),
    },
)
async def ping_endpoint(
    id: EndpointId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue a signed `webhook.ping` event; its outcome appears in the delivery log."""
    return json_response(await state.webhook_endpoints.ping(conn, principal, id), 202)


@router.get(
    "/{id}/deliveries",
    response_model=DeliveryList,
    summary="List an endpoint's deliveries",
    operation_id="listWebhookDeliveries",
    responses=error_responses(400, 401, 404, 429, 500),
)
async def list_deliveries(
    id: EndpointId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    page: Page = 1,
    page_size: PageSize = 20,
    status: Annotated[
        list[DeliveryStatus] | None, Query(description="Repeat to match any of several.")
    ] = None,
    event_type: Annotated[
        list[Annotated[SafeStr, Query(max_length=64)]] | None,
        Query(description="Repeat to match any of several."),
    ] = None,
    event_id: Annotated[SafeStr | None, Query(max_length=64)] = None,
) -> Response:
    """The delivery log, newest first: status, attempts, the last answer and the next try."""
    where = DeliveryFilter(tuple(status or ()), tuple(event_type or ()), event_id)
    return json_response(
        await state.webhook_endpoints.deliveries(
            conn, principal, id, where, page=page, page_size=page_size
        )
    )


@router.get(
    "/{id}/deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="Retrieve a delivery with its payload",
    operation_id="getWebhookDelivery",
    responses=error_responses(401, 404, 429, 500),
)
async def get_delivery(
    id: EndpointId,
    delivery_id: DeliveryId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
) -> Response:
    return json_response(await state.webhook_endpoints.delivery(conn, principal, id, delivery_id))


@router.post(
    "/{id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDelivery,
    summary="Send a delivery again",
    operation_id="redeliverWebhook",
    responses={
        202: {"description": "The delivery, due now on a fresh schedule.", "headers": REPLAYED_DOC},
        **error_responses(401, 404, 409, 429, 500, 503),
    },
)
async def redeliver(
    id: EndpointId,
    delivery_id: DeliveryId,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Whatever its status, the same event (same `id`, same body) is sent again now, with
    the retry schedule starting over."""
    return json_response(
        await state.webhook_endpoints.redeliver(conn, principal, id, delivery_id), 202
    )
