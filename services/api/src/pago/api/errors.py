"""API errors: exception classes that carry their HTTP status, and the one envelope they render.

Every 4xx and 5xx leaves the service as ``{"error": {"type", "code", "message", "param",
"doc_url"}}`` — raised ``ApiError`` subclasses, FastAPI validation errors, unknown routes, wrong
methods and unexpected exceptions alike (the last as a 500 without a stack trace).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    IDEMPOTENCY = "idempotency_error"
    API = "api_error"


class ApiError(Exception):
    """Base of every error the API returns on purpose; subclasses fix status, type and code."""

    status_code: int = 500
    type: ClassVar[ErrorType] = ErrorType.API
    default_code: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = dict(headers or {})


class InvalidRequest(ApiError):
    status_code = 400
    type = ErrorType.INVALID_REQUEST
    default_code = "parameter_invalid"


class ParameterMissing(InvalidRequest):
    default_code = "parameter_missing"


class InvalidSubMerchantCode(InvalidRequest):
    default_code = "invalid_sub_merchant_code"


class AuthenticationFailed(ApiError):
    status_code = 401
    type = ErrorType.AUTHENTICATION
    default_code = "authentication_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class TestModeOnly(ApiError):
    status_code = 403
    type = ErrorType.INVALID_REQUEST
    default_code = "test_mode_only"


class ResourceMissing(ApiError):
    status_code = 404
    type = ErrorType.INVALID_REQUEST
    default_code = "resource_missing"


class MethodNotAllowed(ApiError):
    status_code = 405
    type = ErrorType.INVALID_REQUEST
    default_code = "method_not_allowed"


class StateConflict(ApiError):
    """The request is valid but the resource's state forbids it (e.g. expiring a paid session)."""

    status_code = 409
    type = ErrorType.INVALID_REQUEST
    default_code = "state_conflict"


class IdempotencyConflict(ApiError):
    status_code = 409
    type = ErrorType.IDEMPOTENCY
    default_code = "idempotency_conflict"


class RequestInProgress(ApiError):
    status_code = 409
    type = ErrorType.IDEMPOTENCY
    default_code = "request_in_progress"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class SessionExpired(ApiError):
    """The duplicate-order guard found the order's session, and it expired."""

    status_code = 410
    type = ErrorType.INVALID_REQUEST
    default_code = "session_expired"


class PayloadTooLarge(ApiError):
    status_code = 413
    type = ErrorType.INVALID_REQUEST
    default_code = "request_too_large"


class RateLimited(ApiError):
    status_code = 429
    type = ErrorType.INVALID_REQUEST
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class InternalError(ApiError):
    status_code = 500
    default_code = "api_error"


class BadGateway(ApiError):
    """An upstream (a card provider) refused what Pago sent it; retrying the same will not help."""

    status_code = 502
    default_code = "provider_rejected"


class ServiceUnavailable(ApiError):
    status_code = 503
    default_code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class ExchangeRateUnavailable(ServiceUnavailable):
    default_code = "exchange_rate_unavailable"


class AddressPoolExhausted(ServiceUnavailable):
    default_code = "address_pool_exhausted"


# --- the envelope ---------------------------------------------------------------------------


class ErrorBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: ErrorType
    code: str = Field(examples=["parameter_invalid"])
    message: str
    param: str | None = Field(default=None, description="The request field or header at fault.")
    doc_url: str | None = None


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx response body."""

    model_config = ConfigDict(frozen=True)

    error: ErrorBody


def envelope_bytes(error: ApiError, doc_base_url: str | None) -> bytes:
    body = {
        "error": {
            "type": error.type.value,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "doc_url": f"{doc_base_url}#{error.code}" if doc_base_url else None,
        }
    }
    return json.dumps(body, separators=(",", ":")).encode()


def error_response(error: ApiError, doc_base_url: str | None) -> Response:
    return Response(
        envelope_bytes(error, doc_base_url),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: `parameter_invalid`, `parameter_missing`, `invalid_json`, "
    "`invalid_sub_merchant_code` (an `X-Sub-Merchant-Code` that names no active sub-merchant of "
    "the key's merchant), `amount_too_small`, `amount_too_large`.",
    401: "Missing, unknown or revoked API key (`authentication_failed`).",
    403: "Test helpers need a test-mode key (`test_mode_only`).",
    404: "No such resource for this merchant and mode (`resource_missing`).",
    405: "Method not allowed on this path (`method_not_allowed`).",
    409: "State conflict (`session_not_pending`), or an `Idempotency-Key` reused with another "
    "body (`idempotency_conflict`) or still running (`request_in_progress`, with `Retry-After`).",
    410: "The session of this `client_reference_id` (same network and currency) expired "
    "(`session_expired`; the duplicate-order guard): use a new reference for a new session.",
    413: "Request body too large (`request_too_large`).",
    429: "Too many requests for this key or client (`rate_limited`, with `Retry-After`).",
    500: "Unexpected error (`api_error`); nothing was committed.",
    502: "A card provider refused the checkout Pago sent it (`provider_rejected`); the message "
    "carries the provider's reason.",
    503: "A dependency is down (`service_unavailable`), no fresh exchange rate "
    "(`exchange_rate_unavailable`) or no free deposit address (`address_pool_exhausted`); "
    "retry after `Retry-After` seconds.",
}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the envelope for ``statuses``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorEnvelope, "description": _ERROR_DESCRIPTIONS[status]}
        if status in (409, 429, 503):
            entry["headers"] = _RETRY_AFTER
        responses[status] = entry
    return responses


# --- handlers -------------------------------------------------------------------------------


def _param(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


def from_validation_error(exc: RequestValidationError) -> ApiError:
    """The first problem of a FastAPI/pydantic validation error, as an ``ApiError``."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest("The request is invalid.")
    first = errors[0]
    kind = str(first.get("type", ""))
    param = _param(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return InvalidRequest(
            f"The request body is not valid JSON ({detail}).", code="invalid_json"
        )
    if kind == "missing":
        if param is None:
            return ParameterMissing("The request needs a JSON body.")
        return ParameterMissing(f"Missing required param: {param}.", param=param)
    if param is None:
        return InvalidRequest(f"Invalid request body: {msg}.")
    return InvalidRequest(f"Invalid {param}: {msg}.", param=param)


def _path_pattern(template: str) -> re.Pattern[str]:
    """``/v1/checkout/sessions/{id}`` → a regex matching concrete paths of that template."""
    parts = [
        "[^/]+" if part.startswith("{") and part.endswith("}") else re.escape(part)
        for part in template.split("/")
    ]
    return re.compile("/".join(parts) + "$")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents for this path (Starlette's 405 names only the first route
    that matched the path, so ``GET`` and ``POST`` on one path would each hide the other)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (
                _path_pattern(path),
                sorted(m.upper() for m in operations),
            )
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    for pattern, methods in table:
        if pattern.match(request.url.path):
            return methods
    return []


def from_http_exception(request: Request, exc: StarletteHTTPException) -> ApiError:
    headers = dict(exc.headers or {})
    error: ApiError
    if exc.status_code == 404:
        return ResourceMissing(f"Unrecognized request URL ({request.method}: {request.url.path}).")
    if exc.status_code == 405:
        allowed = _allowed_methods(request) or [headers.get("Allow", "")]
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.")
        error.headers["Allow"] = ", ".join(allowed)
        return error
    if exc.status_code == 413:
        return PayloadTooLarge("The request body is too large.")
    if exc.status_code >= 500:
        return InternalError("An unexpected error occurred.")
    error = InvalidRequest(str(exc.detail), code="invalid_request")
    error.status_code = exc.status_code
    error.headers.update(headers)
    return error


def install_error_handlers(app: FastAPI, doc_base_url: str | None) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, RequestValidationError):
            error = from_validation_error(exc)
        elif isinstance(exc, StarletteHTTPException):
            error = from_http_exception(request, exc)
        else:  # not registered for anything else
            raise exc
        return error_response(error, doc_base_url)

    for kind in (ApiError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(kind, on_error)
