"""Pure ASGI middlewares: the last-resort error guard and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) because they sit on every request's hot path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pago.api.checkout_page import page
from pago.api.errors import (
    ApiError,
    InternalError,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    error_response,
    from_http_exception,
)
from pago.api.ratelimit import Limit, RateLimiter

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "pago_api_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "pago_api_request_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a body passes the limit; renders as 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


def _dependency_down(exc: BaseException) -> bool:
    """Postgres or Redis unreachable, or the connection pool exhausted: a 503 the client may
    retry, not a 500 (nothing of the request was committed)."""
    if isinstance(exc, OSError | sa_exc.TimeoutError | redis_exc.ConnectionError):
        return True
    if isinstance(exc, redis_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class ErrorGuardMiddleware:
    """Turns anything that escaped the exception handlers into the error envelope.

    An unexpected exception is logged with its traceback and answered with a 500 ``api_error``
    that carries no detail; Postgres or Redis being unreachable is a 503 ``service_unavailable``
    with ``Retry-After``; a body over ``max_body_bytes`` is a 413. Starlette's own
    ``ServerErrorMiddleware`` would re-raise after answering (a second, noisy log line).
    """

    def __init__(self, app: ASGIApp, *, doc_base_url: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.doc_base_url = doc_base_url
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        received = 0
        limit = self.max_body_bytes

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._respond(scope, receive, send, PayloadTooLarge(self._too_large()))
            return
        try:
            await self.app(scope, limited_receive, guarded_send)
        except StarletteHTTPException as exc:
            if started:
                raise
            error = from_http_exception(Request(scope), exc)
            if isinstance(exc, BodyTooLarge):
                error = PayloadTooLarge(self._too_large())
            await self._respond(scope, receive, send, error)
        except ApiError as exc:
            if started:
                raise
            await self._respond(scope, receive, send, exc)
        except Exception as exc:
            if _dependency_down(exc):
                log.warning(
                    "a dependency is unreachable",
                    extra={"path": scope.get("path"), "error": repr(exc)},
                )
                if not started:
                    await self._respond(
                        scope,
                        receive,
                        send,
                        ServiceUnavailable("A dependency is unreachable; retry shortly."),
                    )
                return
            log.exception(
                "unhandled error", extra={"method": scope.get("method"), "path": scope.get("path")}
            )
            if started:
                return  # half a response is out; the server closes the connection
            await self._respond(
                scope, receive, send, InternalError("An unexpected error occurred.")
            )

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    async def _respond(self, scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
        await error_response(error, self.doc_base_url)(scope, receive, send)


class MetricsMiddleware:
    """Counts requests and observes latency per route template (not per raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)


_AUTHENTICATED = re.compile(r"/v1/(?!checkout/sessions/[^/]+/events$)|/api/v1/sessions(?:/|$)")
"""Routes under ``/v1/`` take an API key (their limits are per key, or per IP without one),
except the hosted page's SSE stream, which is public like the page; the card API's sessions
take a JWT (limited per client, or per IP when the token is refused). Provider webhooks
(``/api/v1/webhooks/…``) keep the per-IP limit: a provider retries a 429, and an unverified
flood must not turn into as many verification calls (PayPal verifies through its own API)."""
_HTML = re.compile(r"/checkout/(?!assets/)[^/]+|/docs|/asyncapi")


class PublicRateLimitMiddleware:
    """Limits every route that takes no API key per client IP: the hosted page, its QR code,
    assets and SSE stream, health probes and the API's documents.

    The client IP is the connection's peer as uvicorn reports it, which is the
    ``X-Forwarded-For`` client when the peer is in ``forwarded_allow_ips`` (the ingress).
    Over the limit: 429 with ``Retry-After``, a plain page for the page itself, the error
    envelope for everything else.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Callable[[], RateLimiter],
        limit: Limit,
        doc_base_url: str | None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.limit = limit
        self.doc_base_url = doc_base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _AUTHENTICATED.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else "unknown"
        try:
            await self.limiter().hit(f"public:{host}", self.limit)
        except RateLimited as exc:
            response: Response
            if _HTML.fullmatch(scope["path"]):
                retry_after = int(exc.headers["Retry-After"])
                response = Response(
                    page.too_many_requests(retry_after),
                    status_code=429,
                    headers={**exc.headers, "Cache-Control": "no-store"},
                    media_type="text/html",
                )
            else:
                response = error_response(exc, self.doc_base_url)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
