"""A local Adyen: Checkout API ``/sessions`` (hosted mode), its hosted page and Standard webhooks.

Written from Adyen's API reference (Checkout API v71) and kept honest by
``tests/contract/cardproviders/adyen``:

- ``POST /v71/sessions`` with ``X-API-Key`` creates a session and answers 201 with ``id``
  (``CS`` + 16 hex), ``sessionData``, ``url`` (the hosted page, ``mode: "hosted"``),
  ``expiresAt`` and the echoed request fields. ``GET /v71/sessions/{id}`` answers
  ``{id, status}`` with Adyen's words: ``active``, ``completed``, ``paymentPending``,
  ``refused``, ``canceled``, ``expired``.
- ``Idempotency-Key`` (≤ 64 characters): Adyen stores the first response per key (per company
  account) and returns it to any later request with that key — the docs describe no check of the
  body, which is why they tell one to use v4 UUIDs so that users of one account cannot read each
  other's responses; a duplicate that arrives while the first is still being processed gets
  422 with ``errorCode`` ``704`` ("request already processed or in progress") and the
  ``transient-error: true`` header. Replays carry the ``Idempotency-Key`` header back.
- Errors are Adyen's ``ServiceError``: ``{status, errorCode, message, errorType, pspReference}``.
- The hosted page has a Pay and a Decline button. Either sends a Standard webhook
  (``AUTHORISATION``, ``success`` ``"true"``/``"false"`` with a ``reason``) signed with the
  hex-decoded HMAC key over
  ``pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success``
  (base64 of HMAC-SHA256, in ``additionalData.hmacSignature``), then redirects the shopper to
  ``returnUrl`` with ``sessionId`` and ``sessionResult``. A delivery is accepted only when the
  endpoint answers 2xx with ``[accepted]``; otherwise it is retried (Adyen retries for days;
  here a few quick attempts, see ``RETRY_DELAYS``).

Simplifications, on purpose: one payment attempt per session (a decline makes it ``refused``
rather than letting the shopper retry), card only, no 3-D Secure, no ``/payments``.

Secrets (``ProviderContext.secrets``): ``api_key``, ``merchant_account``, ``hmac_key`` (hex).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from pago.devstack.cardproviders.context import FailureMode, ProviderContext

API_VERSIONS = frozenset({"v70", "v71"})
"""Checkout API versions served (``mode: "hosted"`` with ``url`` exists from v70 on)."""
MAX_IDEMPOTENCY_KEY = 64
DEFAULT_SESSION_LIFETIME = timedelta(hours=1)
"""Adyen's default when ``expiresAt`` is not sent."""
MAX_SESSION_LIFETIME = timedelta(hours=24)
"""Adyen refuses an ``expiresAt`` more than 24 hours after creation."""
RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)
"""Seconds before each webhook delivery attempt."""
WEBHOOK_TIMEOUT = 10.0
"""Adyen waits 10 s for a webhook endpoint's answer."""
ACCEPTED = "[accepted]"

SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)
"""The order of the values in a Standard webhook's HMAC payload (Adyen's "verify HMAC
signatures": missing values are empty strings; no escaping)."""

STATUSES = ("active", "completed", "paymentPending", "refused", "canceled", "expired")
"""``SessionResultResponse.status`` values."""


def hmac_payload(item: Mapping[str, Any]) -> str:
    """The string a Standard webhook's ``NotificationRequestItem`` is signed over."""
    amount = item.get("amount") or {}
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    return ":".join("" if values.get(name) is None else str(values[name]) for name in SIGNED_FIELDS)


def hmac_signature(item: Mapping[str, Any], hex_key: str) -> str:
    """Base64 HMAC-SHA256 of ``hmac_payload(item)`` with the hex-decoded key."""
    digest = hmac.new(
        binascii.unhexlify(hex_key), hmac_payload(item).encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


class AdyenError(Exception):
    """An answer in Adyen's ``ServiceError`` format."""

    def __init__(
        self, status: int, error_code: str, message: str, error_type: str, **headers: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.error_type = error_type
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {
            "status": self.status,
            "errorCode": self.error_code,
            "message": self.message,
            "errorType": self.error_type,
            "pspReference": _psp_reference(),
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _psp_reference() -> str:
    """16 upper-case alphanumerics, like Adyen's."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _validation(field_name: str, message: str, code: str = "702") -> AdyenError:
    return AdyenError(422, code, f"{message} ({field_name})", "validation")


@dataclass
class Delivery:
    """One notification and what became of its delivery attempts."""

    body: dict[str, Any]
    attempts: list[str] = field(default_factory=list)
    """Per attempt: the HTTP status and body start, or the exception's name."""
    accepted: bool = False


@dataclass
class Session:
    request: dict[str, Any]
    response: dict[str, Any]
    expires_at: datetime
    declines: bool
    """Created in ``FailureMode.DECLINE``: Pay declines the card."""
    status: str = "active"
    psp_reference: str | None = None

    @property
    def id(self) -> str:
        return str(self.response["id"])

    def current_status(self, now: datetime) -> str:
        if self.status == "active" and now >= self.expires_at:
            return "expired"
        return self.status


@dataclass
class _Stored:
    status: int
    body: dict[str, Any]


class AdyenFake:
    """The state of one local Adyen account (one API key, one merchant account)."""

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.sessions: dict[str, Session] = {}
        self.deliveries: list[Delivery] = []
        self._idempotent: dict[str, _Stored] = {}
        self._in_progress: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- Checkout API -------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        try:
            self._check_version(request)
            self._authenticate(request)
            key = request.headers.get("idempotency-key")
            if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
                raise AdyenError(
                    422, "702", "Idempotency-Key must be 1 to 64 characters", "validation"
                )
            if key is not None:
                stored = self._idempotent.get(key)
                if stored is not None:
                    return JSONResponse(
                        stored.body, status_code=stored.status, headers={"Idempotency-Key": key}
                    )
                if key in self._in_progress:
                    raise AdyenError(
                        422, "704", "request already processed or in progress", "validation",
                        **{"transient-error": "true"},
                    )  # fmt: skip
                self._in_progress.add(key)
            try:
                status, body = await self._create(await request.body())
            finally:
                if key is not None:
                    self._in_progress.discard(key)
            if key is not None:
                # Only a created session is kept: an error leaves the key free for the retry.
                self._idempotent[key] = _Stored(status, body)
            headers = {"Idempotency-Key": key} if key is not None else None
            return JSONResponse(body, status_code=status, headers=headers)
        except AdyenError as error:
            return error.response()

    async def _create(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        mode = self.ctx.faults.take()
        if mode is FailureMode.SERVER_ERROR:
            raise AdyenError(500, "905", "Internal error", "internal")
        if mode is FailureMode.RATE_LIMITED:
            raise AdyenError(429, "429", "Too many requests", "throttling")
        if mode is FailureMode.TIMEOUT:
            # The client gave up long before; the session is still created (an orphan).
            await asyncio.sleep(self.ctx.faults.timeout_seconds)
        body = self._parse(raw)
        session = self._new_session(body, declines=mode is FailureMode.DECLINE)
        self.sessions[session.id] = session
        return 201, session.response

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw, parse_float=Decimal)
        except ValueError as error:
            raise AdyenError(400, "702", "Invalid JSON request body", "validation") from error
        if not isinstance(body, dict):
            raise AdyenError(400, "702", "Request body must be a JSON object", "validation")
        return body

    def _new_session(self, body: dict[str, Any], *, declines: bool) -> Session:
        merchant = body.get("merchantAccount")
        if not isinstance(merchant, str) or not merchant:
            raise _validation("merchantAccount", "Required field is not provided", "702")
        if merchant != self.ctx.secrets.get("merchant_account"):
            raise AdyenError(403, "901", "Invalid Merchant Account", "security")
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise _validation("amount", "Required object is not provided", "100")
        value, currency = amount.get("value"), amount.get("currency")
        if type(value) is not int or value < 0:
            raise _validation("amount.value", "Amount must be an integer in minor units", "137")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            raise _validation("amount.currency", "Invalid currency code", "138")
        reference = body.get("reference")
        if not isinstance(reference, str) or not reference or len(reference) > 80:
            raise _validation("reference", "Required field is not provided or too long", "130")
        return_url = body.get("returnUrl")
        if not isinstance(return_url, str) or not return_url or len(return_url) > 8000:
            raise _validation("returnUrl", "Return URL is missing", "14_030")
        mode = body.get("mode", "embedded")
        if mode not in ("embedded", "hosted"):
            raise _validation("mode", "Invalid mode")
        now = datetime.now(UTC)
        expires_at = now + DEFAULT_SESSION_LIFETIME
        if "expiresAt" in body:
            try:
                expires_at = datetime.fromisoformat(str(body["expiresAt"]))
            except ValueError as error:
                raise _validation("expiresAt", "Invalid date-time") from error
            if expires_at.tzinfo is None or not now < expires_at <= now + MAX_SESSION_LIFETIME:
                raise _validation("expiresAt", "expiresAt must be within 24 hours")
        session_id = "CS" + secrets.token_hex(8).upper()
        response: dict[str, Any] = {
            key: body[key]
            for key in (
                "countryCode", "shopperLocale", "shopperEmail", "shopperName", "telephoneNumber",
                "billingAddress", "deliveryAddress", "lineItems", "metadata", "channel",
                "shopperReference", "merchantOrderReference",
            )
            if key in body
        }  # fmt: skip
        response.update(
            {
                "id": session_id,
                "amount": {"currency": currency, "value": value},
                "merchantAccount": merchant,
                "reference": reference,
                "returnUrl": return_url,
                "expiresAt": expires_at.isoformat(timespec="seconds"),
                "mode": mode,
                "sessionData": "Ab02b4c0!" + base64.b64encode(secrets.token_bytes(48)).decode(),
            }
        )
        if mode == "hosted":
            response["url"] = f"{self.ctx.public_url}/checkoutshopper/pay/{session_id}"
        return Session(body, response, expires_at, declines)

    async def get_session(self, request: Request) -> Response:
        try:
            self._check_version(request)
            self._authenticate(request)
            session = self.sessions.get(request.path_params["session_id"])
            if session is None:
                raise AdyenError(422, "14_0417", "Session not found", "validation")
            return JSONResponse(
                {"id": session.id, "status": session.current_status(datetime.now(UTC))}
            )
        except AdyenError as error:
            return error.response()

    def _check_version(self, request: Request) -> None:
        if request.path_params["version"] not in API_VERSIONS:
            raise AdyenError(404, "000", "HTTP Status Response - Not Found", "internal")

    def _authenticate(self, request: Request) -> None:
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), self.ctx.secrets["api_key"].encode()):
            raise AdyenError(401, "000", "HTTP Status Response - Unauthorized", "security")

    # --- the hosted page ----------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return HTMLResponse(_page("Payment session not found", ""), status_code=404)
        status = session.current_status(datetime.now(UTC))
        amount = session.response["amount"]
        if status != "active":
            return HTMLResponse(_page("This payment session is closed", f"Status: {status}"))
        description = (
            f'<p id="amount">{html.escape(amount["currency"])} {amount["value"]} '
            "(minor units)</p>"
            f'<p id="reference">{html.escape(session.response["reference"])}</p>'
            f'<form method="post" action="{html.escape(session.id)}">'
            '<button type="submit" name="action" value="pay">Pay</button> '
            '<button type="submit" name="action" value="decline">Decline</button>'
            "</form>"
        )
        return HTMLResponse(_page("Adyen Hosted Checkout (local)", description))

    async def submit(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return HTMLResponse(_page("Payment session not found", ""), status_code=404)
        if session.current_status(datetime.now(UTC)) != "active":
            return HTMLResponse(_page("This payment session is closed", ""), status_code=409)
        # A urlencoded form of one field: parsed here rather than with python-multipart.
        action = parse_qs((await request.body()).decode("latin-1")).get("action", [None])[0]
        if action not in ("pay", "decline"):
            return HTMLResponse(_page("Unknown action", ""), status_code=400)
        authorised = action == "pay" and not session.declines
        session.psp_reference = _psp_reference()
        session.status = "completed" if authorised else "refused"
        self.notify(self.authorisation(session, success=authorised))
        result = "Ab02b4c0!" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
        target = _with_query(
            session.response["returnUrl"], {"sessionId": session.id, "sessionResult": result}
        )
        return RedirectResponse(target, status_code=303)

    # --- Standard webhooks --------------------------------------------------------------

    def authorisation(self, session: Session, *, success: bool) -> dict[str, Any]:
        """The ``AUTHORISATION`` notification of ``session``'s payment."""
        item: dict[str, Any] = {
            "eventCode": "AUTHORISATION",
            "success": "true" if success else "false",
            "pspReference": session.psp_reference,
            "merchantAccountCode": session.response["merchantAccount"],
            "merchantReference": session.response["reference"],
            "amount": dict(session.response["amount"]),
            "eventDate": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "paymentMethod": "visa",
            "operations": ["CANCEL", "CAPTURE", "REFUND"] if success else [],
        }
        if not success:
            item["reason"] = "Refused"
        additional: dict[str, str] = {"checkoutSessionId": session.id}
        metadata = session.request.get("metadata")
        if isinstance(metadata, dict):
            additional.update({f"metadata.{k}": str(v) for k, v in metadata.items()})
        additional["hmacSignature"] = hmac_signature(item, self.ctx.secrets["hmac_key"])
        item["additionalData"] = additional
        return {"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}

    def notify(self, body: dict[str, Any]) -> Delivery:
        """Deliver ``body`` in the background (kept in ``deliveries`` either way)."""
        delivery = Delivery(body)
        self.deliveries.append(delivery)
        if self.ctx.webhook_url is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return delivery

    async def _deliver(self, delivery: Delivery) -> None:
        url = self.ctx.webhook_url
        if url is None:
            return
        payload = json.dumps(delivery.body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Adyen HttpClient 1.0"}
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            for delay in RETRY_DELAYS:
                await asyncio.sleep(delay)
                try:
                    answer = await client.post(url, content=payload, headers=headers)
                except httpx.HTTPError as error:
                    delivery.attempts.append(type(error).__name__)
                    continue
                delivery.attempts.append(f"{answer.status_code} {answer.text[:40]}")
                if answer.is_success and answer.text.strip() == ACCEPTED:
                    delivery.accepted = True
                    break

    async def list_deliveries(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"body": d.body, "attempts": d.attempts, "accepted": d.accepted}
                for d in self.deliveries
            ]
        )

    # --- test control -------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            mode = FailureMode(body["mode"])
            count = body.get("count")
            if count is not None and (type(count) is not int or count < 1):
                raise ValueError("count")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {mode, count?}"}, status_code=400)
        self.ctx.faults.mode, self.ctx.faults.remaining = mode, count
        return JSONResponse({"mode": mode.value, "count": count})

    def mount(self) -> Mount:
        return Mount(
            "/adyen",
            routes=[
                Route("/{version}/sessions", self.create_session, methods=["POST"]),
                Route("/{version}/sessions/{session_id}", self.get_session, methods=["GET"]),
                Route("/checkoutshopper/pay/{session_id}", self.page, methods=["GET"]),
                Route("/checkoutshopper/pay/{session_id}", self.submit, methods=["POST"]),
                Route("/_control", self.control, methods=["POST"]),
                Route("/_notifications", self.list_deliveries, methods=["GET"]),
            ],
        )

    async def aclose(self) -> None:
        """Stop deliveries still retrying."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _page(title: str, content: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{content}</main></body></html>"
    )


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


def build(ctx: ProviderContext) -> Mount:
    """The local Adyen under ``/adyen`` (``AdyenFake(ctx).mount()`` keeps its state at hand)."""
    return AdyenFake(ctx).mount()
