"""The OpenAPI document, completed with what every operation can answer.

FastAPI documents what each route declares; some answers come from layers around the routes
and apply to every operation alike: the rate limits (429, per key or per client IP), header
checks (400 for a malformed ``X-Sub-Merchant-Code`` or ``Idempotency-Key``), authentication
(401), the body-size guard (413), a dependency being down (503) and the last-resort guard
(500). They are added here so that the document lists every status an operation can return,
each with the error envelope. ``tests/integration/api/test_schemathesis.py`` holds the running
api to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pago.api.auth.keys import SUB_MERCHANT_CODE
from pago.api.errors import error_responses
from pago.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from pago.api.responses import REPLAYED_DOC
from pago.api.validation import MAX_UNIX_SECONDS

SUB_MERCHANT_HEADER_PATTERN = f"^({SUB_MERCHANT_CODE.pattern})?$"
"""A code, or nothing: an empty header is treated as an absent one."""

_TIMESTAMP = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "number", "minimum": 0, "maximum": MAX_UNIX_SECONDS},
    ],
    "description": "RFC 3339, or unix seconds.",
}
_TIMESTAMP_PARAMETERS = frozenset({"created_after", "created_before"})
_NO_DEPENDENCIES = frozenset({"healthz"})
_ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
_METHODS = ("get", "put", "post", "delete", "patch")


def _error(status: int) -> dict[str, Any]:
    entry = dict(error_responses(status)[status])
    entry.pop("model")
    entry["content"] = {"application/json": {"schema": _ENVELOPE_REF}}
    return entry


def _statuses(operation: dict[str, Any]) -> set[int]:
    """What any operation of this shape can answer besides its own declared outcomes."""
    statuses = {429, 500}
    if operation.get("operationId") not in _NO_DEPENDENCIES:
        statuses.add(503)  # Postgres or Redis unreachable
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(400)
    if operation.get("security"):
        statuses |= {400, 401}
    if operation.get("requestBody"):
        statuses.add(413)
    return statuses


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is one that may be left out; it is never the JSON ``null`` (a
    header or query value is text, and ``"null"`` would be a value)."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its 422s (validation errors here are 400 envelopes), plus
    the statuses every operation shares, and the header patterns the server applies."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(operation)):
                responses.setdefault(str(status), _error(status))
            if any(p["name"] == IDEMPOTENCY_HEADER for p in operation.get("parameters", [])):
                # Every stored 2xx can be replayed, whichever operation stored it.
                for code, response in responses.items():
                    if code.startswith("2"):
                        response.setdefault("headers", {}).update(REPLAYED_DOC)
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter["schema"])
                if parameter["in"] == "query" and parameter["name"] in _TIMESTAMP_PARAMETERS:
                    parameter["schema"] = dict(_TIMESTAMP)
                if parameter["in"] == "header" and parameter["name"] == "X-Sub-Merchant-Code":
                    parameter["schema"] = {
                        "type": "string",
                        "maxLength": 64,
                        "pattern": SUB_MERCHANT_HEADER_PATTERN,
                        "title": "X-Sub-Merchant-Code",
                    }
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
