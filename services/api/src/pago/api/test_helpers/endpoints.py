"""HTTP routes of the test helpers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from pago.api.dependencies import CurrentPrincipal, IdempotencyKey, State, Transaction
from pago.api.errors import error_responses
from pago.api.responses import json_response
from pago.api.test_helpers.schemas import SimulateTransferRequest
from pago.common.events import TransferObserved
from pago.common.topics import transfer_key

router = APIRouter(prefix="/v1/test_helpers/checkout/sessions", tags=["Test helpers"])


@router.post(
    "/{id}/transfers",
    status_code=202,
    response_model=TransferObserved,
    summary="Simulate a transfer to a test-mode session's address",
    operation_id="simulateTransfer",
    responses={
        202: {"description": "The `TransferObserved` event, published to `chain.transfers`."},
        **error_responses(400, 401, 403, 404, 409, 429, 500, 503),
    },
)
async def simulate_transfer(
    id: Annotated[str, Path(description="The session id (`cs_…`).")],
    body: SimulateTransferRequest,
    principal: CurrentPrincipal,
    state: State,
    conn: Transaction,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish what a watcher would: a `TransferObserved` to `chain.transfers`, keyed
    `{network}:{address}`, so the matcher credits the session as if the chain had."""
    event = await state.test_helpers.simulated_transfer(conn, principal, id, body)
    await state.transfers.publish(
        event.to_bytes(),
        key=transfer_key(event.network.value, event.to_address).encode(),
        headers={"v": str(event.v), "event_type": "TransferObserved"},
    )
    return json_response(event, 202)
