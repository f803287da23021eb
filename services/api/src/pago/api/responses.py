"""Serializing response models straight to bytes (the endpoint's model is already valid)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

REPLAYED_DOC: dict[str, Any] = {
    "Idempotency-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same `Idempotency-Key`.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

EXISTING_HEADER = "Pago-Existing-Session"
EXISTING_DOC: dict[str, Any] = {
    EXISTING_HEADER: {
        "description": "`true` when the duplicate-order guard answered the existing session "
        "of this `client_reference_id` instead of creating one.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as JSON without FastAPI's second validation pass over the response model."""
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
    )
