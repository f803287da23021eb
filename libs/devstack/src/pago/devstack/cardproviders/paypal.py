"""A local PayPal: Orders v2 with capture, its approval page, and signed webhooks.

It speaks PayPal's REST wire format (paths, field names, status words, error bodies) as the
published Orders v2 and Notifications v1 references give them, for an adapter pointed at
``<server>/paypal``:

- ``POST /v1/oauth2/token``: client credentials with HTTP Basic ``client_id:client_secret``
  (``ctx.secrets``) → a Bearer token (``expires_in`` 32400 s, as PayPal's).
- ``POST /v2/checkout/orders``: ``PayPal-Request-Id`` makes it idempotent (the same id answers the
  stored order again, ``200`` as the reference says of an idempotent replay); ``Prefer:
  return=minimal`` (the default: ``id``, ``status``, ``links``) or ``return=representation``.
  The amount is validated as PayPal does: decimal strings with the currency's decimals
  (``DECIMAL_PRECISION``), ``item_total`` = Σ ``unit_amount`` × ``quantity``
  (``ITEM_TOTAL_MISMATCH``, ``ITEM_TOTAL_REQUIRED``), ``value`` = ``item_total + tax_total +
  shipping + handling + insurance - shipping_discount - discount`` (``AMOUNT_MISMATCH``).
  With ``payment_source.paypal.experience_context`` the order is ``PAYER_ACTION_REQUIRED`` with a
  ``payer-action`` link; without (the older ``application_context``) it is ``CREATED`` with an
  ``approve`` link. ``ctx.faults`` is taken once per create that is not a replay.
- ``GET /v2/checkout/orders/{id}``; ``POST /v2/checkout/orders/{id}/capture`` (only once
  ``APPROVED``: else ``422 ORDER_NOT_APPROVED``; twice: ``ORDER_ALREADY_CAPTURED``; idempotent by
  ``PayPal-Request-Id``). ``ctx.capture_faults`` is taken once per capture that is not a replay:
  ``SERVER_ERROR`` and ``RATE_LIMITED`` capture nothing, ``TIMEOUT`` captures and then holds the
  answer, ``DECLINE`` declines the capture.
- ``GET /checkoutnow?token=<order id>``: the approval page (amount, **Pay** and **Decline**).
  *Pay* approves the order (``CHECKOUT.ORDER.APPROVED``) and sends the payer to ``return_url``
  with ``token`` and ``PayerID``; the merchant's capture then completes
  (``PAYMENT.CAPTURE.COMPLETED``). *Decline* stands for a payer whose funding source will be
  refused: PayPal sends no webhook for an order a payer merely leaves, and the cards of the other
  fakes are declined at payment, so here the payer finishes approval (``CHECKOUT.ORDER.APPROVED``)
  and the capture comes back ``DECLINED`` (``PAYMENT.CAPTURE.DECLINED``, the event PayPal sends
  for a capture in that status); the payer is sent to ``cancel_url``. ``FailureMode.DECLINE`` at
  create makes *Pay* behave the same way (but to ``return_url``).
- Webhooks are signed as PayPal signs them: SHA256withRSA over
  ``<transmission_id>|<transmission_time>|<webhook_id>|<crc32 of the raw body, decimal>``, base64
  in ``PAYPAL-TRANSMISSION-SIG``, the certificate (self-signed, made at start) served at
  ``PAYPAL-CERT-URL``. ``POST /v1/notifications/verify-webhook-signature`` answers
  ``verification_status`` ``SUCCESS`` only for an event this server sent, unchanged, with the
  headers it was sent with and the configured ``webhook_id``.
- ``POST /_control`` sets ``ctx.faults`` (``{"mode", "count"}``; with ``"call": "capture"``,
  ``ctx.capture_faults``) and, for tests of token
  expiry, ``{"token_expires_in": seconds}``; ``GET /_events`` lists the webhooks sent and
  ``GET /_orders`` the ids of the orders created.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import html
import json
import logging
import secrets
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from pago.devstack.cardproviders.context import FailureMode, ProviderContext

log = logging.getLogger(__name__)

TOKEN_EXPIRES_IN = 32400
"""Seconds; what PayPal's token endpoint answers (9 h)."""
APP_ID = "APP-80W284485P519543T"
SCOPE = (
    "https://uri.paypal.com/services/payments/payment "
    "https://uri.paypal.com/services/applications/webhooks "
    "https://uri.paypal.com/services/applications/verify-webhook-signature"
)
AUTH_ALGO = "SHA256withRSA"
CERT_ID = "CERT-360caa42-fca2a594-devstack"
WEBHOOK_ATTEMPTS = 5
"""Deliveries tried per event (PayPal tries 25 times over 3 days; tests need fewer)."""

_TWO_DECIMALS = (
    "AUD BRL CAD CNY CZK DKK EUR HKD ILS MYR MXN NZD NOK PHP PLN GBP SGD SEK CHF THB USD"
)
CURRENCY_DECIMALS: Mapping[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(" "), 2),
    **dict.fromkeys(["HUF", "JPY", "TWD"], 0),
}
"""PayPal's REST currency codes and the decimals it accepts in ``value`` (HUF, JPY and TWD
take none)."""

MAX_VALUE = Decimal("999999999999999.99")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

_MESSAGES = {
    "INVALID_REQUEST": (
        400,
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    "AUTHENTICATION_FAILURE": (
        401,
        "Authentication failed due to missing authorization header, or invalid authentication"
        " credentials.",
    ),
    "RESOURCE_NOT_FOUND": (404, "The specified resource does not exist."),
    "UNPROCESSABLE_ENTITY": (
        422,
        "The requested action could not be performed, semantically incorrect, or failed"
        " business validation.",
    ),
    "RATE_LIMIT_REACHED": (429, "Too many requests. Blocked due to rate limiting."),
    "INTERNAL_SERVER_ERROR": (500, "An internal server error occurred."),
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _time(at: dt.datetime) -> str:
    """PayPal's Internet date-time: UTC, seconds, ``Z``."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pp_id(length: int = 17) -> str:
    """An id in PayPal's shape (``5O190127TN364715T``)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _debug_id() -> str:
    return secrets.token_hex(7)


@dataclass(frozen=True)
class Detail:
    issue: str
    field: str | None = None
    value: str | None = None
    description: str | None = None
    location: str = "body"

    def as_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.field is not None:
            out["field"] = self.field
        if self.value is not None:
            out["value"] = self.value
        out["location"] = self.location
        out["issue"] = self.issue
        if self.description is not None:
            out["description"] = self.description
        return out


class PayPalError(Exception):
    def __init__(self, name: str, *details: Detail, message: str | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.status, default = _MESSAGES[name]
        self.message = message or default
        self.details = details

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"name": self.name, "message": self.message}
        debug_id = _debug_id()
        body["debug_id"] = debug_id
        if self.details:
            body["details"] = [d.as_json() for d in self.details]
            link = f"https://developer.paypal.com/api/rest/reference/orders/v2/errors/#{self.details[0].issue}"
        else:
            link = f"https://developer.paypal.com/api/orders/v2/#error-{self.name}"
        body["links"] = [{"href": link, "rel": "information_link", "method": "GET"}]
        return JSONResponse(body, status_code=self.status, headers={"Paypal-Debug-Id": debug_id})


def _unprocessable(issue: str, field_: str, value: str | None, description: str) -> PayPalError:
    return PayPalError("UNPROCESSABLE_ENTITY", Detail(issue, field_, value, description))


def _invalid(issue: str, field_: str, description: str, value: str | None = None) -> PayPalError:
    return PayPalError("INVALID_REQUEST", Detail(issue, field_, value, description))


def _missing(field_: str) -> PayPalError:
    return _invalid(
        "MISSING_REQUIRED_PARAMETER", field_, "A required field / parameter is missing."
    )


@dataclass
class Order:
    id: str
    intent: str
    status: str
    purchase_units: list[dict[str, Any]]
    create_time: dt.datetime
    return_url: str | None
    cancel_url: str | None
    payment_source: dict[str, Any] | None
    declines: bool = False
    """The payer's funding will be refused at capture."""
    payer: dict[str, Any] | None = None
    update_time: dt.datetime | None = None


@dataclass
class Sent:
    """One webhook event as sent: the raw body the signature covers, and its headers."""

    event: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    deliveries: list[int] = field(default_factory=list)
    """HTTP status of each delivery attempt (0: no answer)."""


class _PayPal:
    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.tokens: dict[str, dt.datetime] = {}
        self.token_expires_in = TOKEN_EXPIRES_IN
        self.orders: dict[str, Order] = {}
        self.replays: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.events: dict[str, Sent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert_pem = _self_signed(self.key)

    # --- helpers ---------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return self.ctx.public_url.rstrip("/")

    @property
    def cert_url(self) -> str:
        return f"{self.base}/v1/notifications/certs/{CERT_ID}"

    def authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expires is None or expires <= _now():
            raise PayPalError("AUTHENTICATION_FAILURE")

    def links(self, order: Order) -> list[dict[str, str]]:
        self_link = {
            "href": f"{self.base}/v2/checkout/orders/{order.id}",
            "rel": "self",
            "method": "GET",
        }
        approve = f"{self.base}/checkoutnow?token={order.id}"
        if order.status == "PAYER_ACTION_REQUIRED":
            return [self_link, {"href": approve, "rel": "payer-action", "method": "GET"}]
        if order.status == "CREATED":
            return [
                self_link,
                {"href": approve, "rel": "approve", "method": "GET"},
                {"href": self_link["href"], "rel": "update", "method": "PATCH"},
                {"href": f"{self_link['href']}/capture", "rel": "capture", "method": "POST"},
            ]
        if order.status == "APPROVED":
            return [
                self_link,
                {"href": self_link["href"], "rel": "update", "method": "PATCH"},
                {"href": f"{self_link['href']}/capture", "rel": "capture", "method": "POST"},
            ]
        return [self_link]

    def representation(self, order: Order) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": order.id,
            "intent": order.intent,
            "status": order.status,
        }
        if order.payment_source is not None:
            body["payment_source"] = order.payment_source
        body["purchase_units"] = order.purchase_units
        if order.payer is not None:
            body["payer"] = order.payer
        body["create_time"] = _time(order.create_time)
        if order.update_time is not None:
            body["update_time"] = _time(order.update_time)
        body["links"] = self.links(order)
        return body

    def minimal(self, order: Order) -> dict[str, Any]:
        return {"id": order.id, "status": order.status, "links": self.links(order)}

    # --- endpoints -------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id = client_secret = ""
        expected = (self.ctx.secrets.get("client_id"), self.ctx.secrets.get("client_secret"))
        if scheme.lower() != "basic" or (client_id, client_secret) != expected:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        form = parse_qs((await request.body()).decode("latin-1"))
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                status_code=400,
            )
        token = "A21AA" + secrets.token_urlsafe(64)
        now = _now()
        self.tokens[token] = now + dt.timedelta(seconds=self.token_expires_in)
        return JSONResponse(
            {
                "scope": SCOPE,
                "access_token": token,
                "token_type": "Bearer",
                "app_id": APP_ID,
                "expires_in": self.token_expires_in,
                "nonce": f"{_time(now)}{secrets.token_urlsafe(32)}",
            }
        )

    async def create_order(self, request: Request) -> Response:
        try:
            self.authenticate(request)
            request_id = request.headers.get("paypal-request-id")
            if request_id is not None and not 1 <= len(request_id) <= 108:
                raise _invalid(
                    "INVALID_STRING_LENGTH",
                    "PayPal-Request-Id",
                    "The value of a field is either too short or too long.",
                )
            if request_id is not None and (replay := self.replays.get(("create", request_id))):
                return JSONResponse(replay[1], status_code=200)
            mode = self.ctx.faults.take()
            if mode is FailureMode.SERVER_ERROR:
                raise PayPalError("INTERNAL_SERVER_ERROR")
            if mode is FailureMode.RATE_LIMITED:
                raise PayPalError("RATE_LIMIT_REACHED")
            order = _parse_order(await request.body())
        except PayPalError as error:
            return error.response()
        order.declines = mode is FailureMode.DECLINE
        self.orders[order.id] = order
        prefer = request.headers.get("prefer", "return=minimal").lower()
        body = (
            self.representation(order) if prefer == "return=representation" else self.minimal(order)
        )
        if request_id is not None:
            self.replays[("create", request_id)] = (201, body)
        if mode is FailureMode.TIMEOUT:
            # Stored first, so a retry with the same PayPal-Request-Id finds this order.
            await asyncio.sleep(self.ctx.faults.timeout_seconds)
        return JSONResponse(body, status_code=201)

    def _order(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise PayPalError(
                "RESOURCE_NOT_FOUND",
                Detail(
                    "INVALID_RESOURCE_ID",
                    location="path",
                    description="Specified resource ID does not exist. Please check the"
                    " resource ID and try again.",
                ),
            )
        return order

    async def get_order(self, request: Request) -> Response:
        try:
            self.authenticate(request)
            order = self._order(request.path_params["order_id"])
        except PayPalError as error:
            return error.response()
        return JSONResponse(self.representation(order))

    async def capture(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        try:
            self.authenticate(request)
            request_id = request.headers.get("paypal-request-id")
            if request_id is not None and (replay := self.replays.get((order_id, request_id))):
                return JSONResponse(replay[1], status_code=200)
            mode = self.ctx.capture_faults.take()
            if mode is FailureMode.SERVER_ERROR:
                raise PayPalError("INTERNAL_SERVER_ERROR")
            if mode is FailureMode.RATE_LIMITED:
                raise PayPalError("RATE_LIMIT_REACHED")
            order = self._order(order_id)
            if order.status == "COMPLETED":
                raise _unprocessable(
                    "ORDER_ALREADY_CAPTURED",
                    "",
                    None,
                    "Order already captured. If 'intent=CAPTURE' only one capture per order is"
                    " allowed.",
                )
            if order.status != "APPROVED":
                raise _unprocessable(
                    "ORDER_NOT_APPROVED",
                    "",
                    None,
                    "Payer has not yet approved the Order for payment. Please redirect the payer"
                    " to the 'rel':'approve' url returned as part of the HATEOAS links within the"
                    " Create Order call.",
                )
        except PayPalError as error:
            return error.response()
        unit = order.purchase_units[0]
        now = _now()
        capture_id = _pp_id()
        status = "DECLINED" if order.declines or mode is FailureMode.DECLINE else "COMPLETED"
        capture: dict[str, Any] = {
            "id": capture_id,
            "status": status,
            "amount": {
                "currency_code": unit["amount"]["currency_code"],
                "value": unit["amount"]["value"],
            },
            "final_capture": True,
            "seller_protection": {
                "status": "ELIGIBLE",
                "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
            },
        }
        for name in ("custom_id", "invoice_id"):
            if name in unit:
                capture[name] = unit[name]
        capture_href = f"{self.base}/v2/payments/captures/{capture_id}"
        capture["links"] = [
            {"href": capture_href, "rel": "self", "method": "GET"},
            {"href": f"{capture_href}/refund", "rel": "refund", "method": "POST"},
            {"href": f"{self.base}/v2/checkout/orders/{order.id}", "rel": "up", "method": "GET"},
        ]
        capture["create_time"] = capture["update_time"] = _time(now)
        unit["payments"] = {"captures": [capture]}
        order.status, order.update_time = "COMPLETED", now
        prefer = request.headers.get("prefer", "return=minimal").lower()
        if prefer == "return=representation":
            body = self.representation(order)
        else:
            body = {
                "id": order.id,
                "status": order.status,
                "payment_source": order.payment_source or {},
                "purchase_units": [
                    {"reference_id": unit["reference_id"], "payments": unit["payments"]}
                ],
                "payer": order.payer,
                "links": self.links(order),
            }
        if request_id is not None:
            self.replays[(order_id, request_id)] = (201, body)
        resource = {**capture, "supplementary_data": {"related_ids": {"order_id": order.id}}}
        amount = f"{capture['amount']['value']} {capture['amount']['currency_code']}"
        if status == "COMPLETED":
            self.send(
                "PAYMENT.CAPTURE.COMPLETED", "capture", f"Payment completed for {amount}", resource
            )
        else:
            self.send(
                "PAYMENT.CAPTURE.DECLINED", "capture", f"Payment declined for {amount}", resource
            )
        if mode is FailureMode.TIMEOUT:
            # Captured (and its webhook sent) first: the client that gave up finds it on retry.
            await asyncio.sleep(self.ctx.capture_faults.timeout_seconds)
        return JSONResponse(body, status_code=201)

    async def page(self, request: Request) -> Response:
        try:
            order = self._order(request.query_params.get("token", ""))
        except PayPalError:
            return HTMLResponse(_page("Order not found", "<p>This order does not exist.</p>"), 404)
        unit = order.purchase_units[0]
        amount = (
            f"{html.escape(unit['amount']['value'])} {html.escape(unit['amount']['currency_code'])}"
        )
        if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            body = f"<p>This order is {html.escape(order.status.lower())}.</p>"
            return HTMLResponse(_page("PayPal checkout", body), 409)
        items = "".join(
            f"<li>{html.escape(str(i.get('name')))} × {html.escape(str(i.get('quantity')))}</li>"
            for i in unit.get("items", [])
        )
        action = f"{self.base}/checkoutnow/{order.id}"
        body = (
            f'<p>Pay <strong data-testid="amount">{amount}</strong></p>'
            f"<ul>{items}</ul>"
            f'<form method="post" action="{action}/approve">'
            '<button type="submit" aria-label="Pay">Pay</button></form>'
            f'<form method="post" action="{action}/decline">'
            '<button type="submit" aria-label="Decline">Decline</button></form>'
        )
        return HTMLResponse(_page("PayPal checkout", body))

    async def approve(self, request: Request) -> Response:
        return self._payer_finished(request, declines=False)

    async def decline(self, request: Request) -> Response:
        return self._payer_finished(request, declines=True)

    def _payer_finished(self, request: Request, *, declines: bool) -> Response:
        try:
            order = self._order(request.path_params["order_id"])
        except PayPalError:
            return HTMLResponse(_page("Order not found", "<p>This order does not exist.</p>"), 404)
        if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            body = f"<p>This order is {html.escape(order.status.lower())}.</p>"
            return HTMLResponse(_page("PayPal checkout", body), 409)
        payer_id = _pp_id(13)
        order.payer = {
            "name": {"given_name": "John", "surname": "Doe"},
            "email_address": "sb-buyer@personal.example.com",
            "payer_id": payer_id,
            "address": {"country_code": "US"},
        }
        order.payment_source = {
            "paypal": {
                "email_address": order.payer["email_address"],
                "account_id": payer_id,
                "account_status": "VERIFIED",
                "name": order.payer["name"],
                "address": order.payer["address"],
            }
        }
        order.declines = order.declines or declines
        order.status, order.update_time = "APPROVED", _now()
        self.send(
            "CHECKOUT.ORDER.APPROVED",
            "checkout-order",
            "An order has been approved by buyer",
            self.representation(order),
        )
        target = order.cancel_url if declines else order.return_url
        if target is None:
            return HTMLResponse(_page("PayPal checkout", "<p>Done. You may close this page.</p>"))
        return RedirectResponse(_with_query(target, token=order.id, PayerID=payer_id), 303)

    async def cert(self, request: Request) -> Response:
        if request.path_params["cert_id"] != CERT_ID:
            return PayPalError("RESOURCE_NOT_FOUND").response()
        return Response(self.cert_pem, media_type="application/x-pem-file")

    async def verify(self, request: Request) -> Response:
        try:
            self.authenticate(request)
            payload = _json(await request.body())
            if not isinstance(payload, dict):
                raise _invalid(
                    "INVALID_PARAMETER_SYNTAX", "/", "The request JSON is not well formed."
                )
            for name in (
                "auth_algo",
                "cert_url",
                "transmission_id",
                "transmission_sig",
                "transmission_time",
                "webhook_id",
                "webhook_event",
            ):
                if name not in payload:
                    raise _missing(f"/{name}")
        except PayPalError as error:
            return error.response()
        ok = self._verifies(payload)
        return JSONResponse({"verification_status": "SUCCESS" if ok else "FAILURE"})

    def _verifies(self, payload: dict[str, Any]) -> bool:
        event = payload["webhook_event"]
        sent = self.events.get(event.get("id", "")) if isinstance(event, dict) else None
        if sent is None or event != _json(sent.body):
            return False
        if payload["auth_algo"] != AUTH_ALGO or payload["cert_url"] != self.cert_url:
            return False
        message = signed_message(
            str(payload["transmission_id"]),
            str(payload["transmission_time"]),
            str(payload["webhook_id"]),
            sent.body,
        )
        try:
            signature = base64.b64decode(str(payload["transmission_sig"]), validate=True)
            self.key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, InvalidSignature):
            return False
        return True

    async def control(self, request: Request) -> Response:
        payload = _json(await request.body())
        if not isinstance(payload, dict):
            return JSONResponse({"error": "a JSON object"}, status_code=400)
        faults = self.ctx.capture_faults if payload.get("call") == "capture" else self.ctx.faults
        if "mode" in payload:
            try:
                faults.mode = FailureMode(payload["mode"])
            except ValueError:
                return JSONResponse({"error": f"unknown mode {payload['mode']!r}"}, status_code=400)
            count = payload.get("count")
            faults.remaining = None if count is None else int(count)
        if "timeout_seconds" in payload:
            faults.timeout_seconds = float(payload["timeout_seconds"])
        if "token_expires_in" in payload:
            self.token_expires_in = int(payload["token_expires_in"])
        return JSONResponse(
            {
                "mode": faults.mode.value,
                "count": faults.remaining,
                "token_expires_in": self.token_expires_in,
            }
        )

    async def order_ids(self, request: Request) -> Response:
        return JSONResponse(list(self.orders))

    async def sent_events(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"event": s.event, "headers": s.headers, "deliveries": s.deliveries}
                for s in self.events.values()
            ]
        )

    # --- webhooks --------------------------------------------------------------------------

    def send(
        self, event_type: str, resource_type: str, summary: str, resource: dict[str, Any]
    ) -> None:
        event_id = f"WH-{_pp_id()}-{_pp_id()}"
        event = {
            "id": event_id,
            "event_version": "1.0",
            "create_time": _time(_now()),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
            "links": [
                {
                    "href": f"{self.base}/v1/notifications/webhooks-events/{event_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base}/v1/notifications/webhooks-events/{event_id}/resend",
                    "rel": "resend",
                    "method": "POST",
                },
            ],
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        transmission_id = str(uuid.uuid1())
        transmission_time = _time(_now())
        webhook_id = self.ctx.secrets.get("webhook_id", "")
        signature = self.key.sign(
            signed_message(transmission_id, transmission_time, webhook_id, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        headers = {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": self.cert_url,
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
        }
        sent = Sent(event, body, headers)
        self.events[event_id] = sent
        if self.ctx.webhook_url is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(self.ctx.webhook_url, sent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, sent: Sent) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            for attempt in range(WEBHOOK_ATTEMPTS):
                try:
                    response = await client.post(url, content=sent.body, headers=sent.headers)
                    sent.deliveries.append(response.status_code)
                    if response.is_success:
                        return
                except httpx.HTTPError as error:
                    sent.deliveries.append(0)
                    log.warning("paypal webhook %s to %s: %s", sent.event["id"], url, error)
                await asyncio.sleep(0.2 * 2**attempt)


def signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """What PayPal signs: the transmission id and time, the webhook id and the CRC32 of the raw
    body as an unsigned decimal integer, joined by ``|``."""
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PayPal, Inc. (Pago devstack)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.paypal.devstack"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _json(raw: bytes) -> Any:
    """Parse a JSON body exactly (numbers as ``Decimal``), or raise PayPal's 400."""
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as error:
        raise PayPalError(
            "INVALID_REQUEST",
            Detail("MALFORMED_REQUEST_JSON", description="The request JSON is not well formed."),
        ) from error


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


# --- create-order validation ---------------------------------------------------------------


def _parse_order(raw: bytes) -> Order:
    payload = _json(raw)
    if not isinstance(payload, dict):
        raise PayPalError(
            "INVALID_REQUEST",
            Detail("MALFORMED_REQUEST_JSON", description="The request JSON is not well formed."),
        )
    intent = payload.get("intent")
    if intent is None:
        raise _missing("/intent")
    if intent not in ("CAPTURE", "AUTHORIZE"):
        raise _invalid(
            "INVALID_PARAMETER_VALUE", "/intent", "A parameter value is not valid.", str(intent)
        )
    units = payload.get("purchase_units")
    if units is None:
        raise _missing("/purchase_units")
    if not isinstance(units, list) or not units:
        raise _invalid(
            "INVALID_ARRAY_MIN_ITEMS",
            "/purchase_units",
            "The number of items in an array parameter is too small.",
        )
    if len(units) > 10:
        raise _invalid(
            "INVALID_ARRAY_MAX_ITEMS",
            "/purchase_units",
            "The number of items in an array parameter is too large.",
        )
    parsed = [_purchase_unit(unit, len(units)) for unit in units]
    currencies = {u["amount"]["currency_code"] for u in parsed}
    if len(currencies) > 1:
        raise _unprocessable(
            "MULTI_CURRENCY_ORDER",
            "/purchase_units",
            None,
            "Multiple differing values of currency_code are not supported. Entire Order request"
            " must have the same currency_code.",
        )
    source = payload.get("payment_source")
    context: dict[str, Any] = {}
    payment_source: dict[str, Any] | None = None
    if isinstance(source, dict) and isinstance(source.get("paypal"), dict):
        context = source["paypal"].get("experience_context") or {}
        payment_source = {
            "paypal": {k: v for k, v in source["paypal"].items() if k != "experience_context"}
        }
        status = "PAYER_ACTION_REQUIRED"
    else:
        context = payload.get("application_context") or {}
        status = "CREATED"
    return Order(
        id=_pp_id(),
        intent=intent,
        status=status,
        purchase_units=parsed,
        create_time=_now(),
        return_url=context.get("return_url"),
        cancel_url=context.get("cancel_url"),
        payment_source=payment_source,
    )


def _pointer(unit: dict[str, Any]) -> str:
    """PayPal's JSON pointer to a purchase unit: by its ``reference_id``."""
    return f"/purchase_units/@reference_id=='{unit.get('reference_id', 'default')}'"


def _money(value: Any, at: str, currency: str | None = None) -> tuple[str, Decimal]:
    """A ``money`` object's currency and exact value, validated as PayPal does."""
    if not isinstance(value, dict):
        raise _missing(at)
    code = value.get("currency_code")
    if code is None:
        raise _missing(f"{at}/currency_code")
    if code not in CURRENCY_DECIMALS:
        raise _unprocessable(
            "INVALID_CURRENCY_CODE",
            f"{at}/currency_code",
            str(code),
            "Currency code is invalid or is not currently supported.",
        )
    if currency is not None and code != currency:
        raise _unprocessable(
            "CURRENCY_MISMATCH",
            f"{at}/currency_code",
            str(code),
            "Currency code should be the same for all amounts of a purchase unit.",
        )
    text = value.get("value")
    if text is None:
        raise _missing(f"{at}/value")
    if not isinstance(text, str):
        raise _invalid(
            "INVALID_PARAMETER_SYNTAX",
            f"{at}/value",
            "The value of a field does not conform to the expected format.",
            str(text),
        )
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or "e" in text.lower() or text.strip() != text:
        raise _invalid(
            "INVALID_PARAMETER_SYNTAX",
            f"{at}/value",
            "The value of a field does not conform to the expected format.",
            text,
        )
    _, _, fraction = text.partition(".")
    if len(fraction) > CURRENCY_DECIMALS[code] or (CURRENCY_DECIMALS[code] == 0 and "." in text):
        raise _unprocessable(
            "DECIMAL_PRECISION",
            f"{at}/value",
            text,
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    if amount > MAX_VALUE:
        raise _unprocessable(
            "MAX_VALUE_EXCEEDED",
            f"{at}/value",
            text,
            "Should be less than or equal to 999999999999999.99.",
        )
    if amount < 0:
        raise _unprocessable(
            "CANNOT_BE_NEGATIVE", f"{at}/value", text, "Must be greater than or equal to 0."
        )
    return code, amount


def _purchase_unit(unit: Any, count: int) -> dict[str, Any]:
    if not isinstance(unit, dict):
        raise _invalid(
            "INVALID_PARAMETER_SYNTAX",
            "/purchase_units",
            "The value of a field does not conform to the expected format.",
        )
    at = _pointer(unit)
    amount = unit.get("amount")
    if amount is None:
        raise _missing(f"{at}/amount")
    currency, total = _money(amount, f"{at}/amount")
    if total == 0:
        raise _unprocessable(
            "CANNOT_BE_ZERO_OR_NEGATIVE",
            f"{at}/amount/value",
            amount["value"],
            "Must be greater than zero.",
        )
    for name, limit in (("custom_id", 255), ("invoice_id", 127), ("reference_id", 256)):
        if name in unit and not (isinstance(unit[name], str) and 1 <= len(unit[name]) <= limit):
            raise _invalid(
                "INVALID_STRING_LENGTH",
                f"{at}/{name}",
                "The value of a field is either too short or too long.",
            )
    breakdown = amount.get("breakdown")
    parts: dict[str, Decimal] = {}
    if breakdown is not None:
        if not isinstance(breakdown, dict):
            raise _missing(f"{at}/amount/breakdown")
        for name in (
            "item_total",
            "shipping",
            "handling",
            "tax_total",
            "insurance",
            "shipping_discount",
            "discount",
        ):
            if name in breakdown:
                _, parts[name] = _money(breakdown[name], f"{at}/amount/breakdown/{name}", currency)
    items = unit.get("items") or []
    if not isinstance(items, list):
        raise _invalid(
            "INVALID_PARAMETER_SYNTAX",
            f"{at}/items",
            "The value of a field does not conform to the expected format.",
        )
    item_sum = Decimal(0)
    tax_sum = Decimal(0)
    any_tax = False
    for index, item in enumerate(items):
        item_at = f"{at}/items/{index}"
        if not isinstance(item, dict):
            raise _missing(item_at)
        if not isinstance(item.get("name"), str) or not 1 <= len(item["name"]) <= 127:
            raise (
                _missing(f"{item_at}/name")
                if "name" not in item
                else _invalid(
                    "INVALID_STRING_LENGTH",
                    f"{item_at}/name",
                    "The value of a field is either too short or too long.",
                )
            )
        quantity = item.get("quantity")
        if quantity is None:
            raise _missing(f"{item_at}/quantity")
        if not (
            isinstance(quantity, str)
            and quantity.isdigit()
            and quantity[0] != "0"
            and len(quantity) <= 10
        ):
            raise _invalid(
                "INVALID_PARAMETER_SYNTAX",
                f"{item_at}/quantity",
                "The value of a field does not conform to the expected format.",
                str(quantity),
            )
        if "unit_amount" not in item:
            raise _missing(f"{item_at}/unit_amount")
        _, price = _money(item["unit_amount"], f"{item_at}/unit_amount", currency)
        item_sum += price * int(quantity)
        if "tax" in item:
            any_tax = True
            _, tax = _money(item["tax"], f"{item_at}/tax", currency)
            tax_sum += tax * int(quantity)
    if items and "item_total" not in parts:
        raise _unprocessable(
            "ITEM_TOTAL_REQUIRED",
            f"{at}/amount/breakdown/item_total",
            None,
            "If item details are specified (items.unit_amount and items.quantity) corresponding"
            " amount.breakdown.item_total is required.",
        )
    if items and parts["item_total"] != item_sum:
        raise _unprocessable(
            "ITEM_TOTAL_MISMATCH",
            f"{at}/amount/breakdown/item_total",
            breakdown["item_total"]["value"],
            "Should equal sum of (unit_amount * quantity) across all items for a given"
            " purchase_unit.",
        )
    if any_tax and parts.get("tax_total", Decimal(0)) != tax_sum:
        raise _unprocessable(
            "TAX_TOTAL_MISMATCH",
            f"{at}/amount/breakdown/tax_total",
            None,
            "Should equal sum of (tax * quantity) across all items for a given purchase_unit.",
        )
    if parts:
        expected = (
            sum(
                (
                    parts.get(n, Decimal(0))
                    for n in ("item_total", "tax_total", "shipping", "handling", "insurance")
                ),
                Decimal(0),
            )
            - parts.get("shipping_discount", Decimal(0))
            - parts.get("discount", Decimal(0))
        )
        if expected != total:
            raise _unprocessable(
                "AMOUNT_MISMATCH",
                f"{at}/amount/value",
                amount["value"],
                "Should equal item_total + tax_total + shipping + handling + insurance -"
                " shipping_discount - discount.",
            )
    stored = {k: v for k, v in unit.items() if k != "reference_id"}
    stored = {"reference_id": unit.get("reference_id", "default"), **stored}
    stored.setdefault(
        "payee", {"email_address": "merchant@business.example.com", "merchant_id": "DEVSTACK7MERCH"}
    )
    return stored


def build(ctx: ProviderContext) -> Mount:
    """The local PayPal, to mount at ``/paypal`` of the card-provider server."""
    state = _PayPal(ctx)
    return Mount(
        "/paypal",
        routes=[
            Route("/v1/oauth2/token", state.token, methods=["POST"]),
            Route("/v2/checkout/orders", state.create_order, methods=["POST"]),
            Route("/v2/checkout/orders/{order_id}", state.get_order, methods=["GET"]),
            Route("/v2/checkout/orders/{order_id}/capture", state.capture, methods=["POST"]),
            Route("/checkoutnow", state.page, methods=["GET"]),
            Route("/checkoutnow/{order_id}/approve", state.approve, methods=["POST"]),
            Route("/checkoutnow/{order_id}/decline", state.decline, methods=["POST"]),
            Route("/v1/notifications/verify-webhook-signature", state.verify, methods=["POST"]),
            Route("/v1/notifications/certs/{cert_id}", state.cert, methods=["GET"]),
            Route("/_control", state.control, methods=["POST"]),
            Route("/_events", state.sent_events, methods=["GET"]),
            Route("/_orders", state.order_ids, methods=["GET"]),
        ],
    )
