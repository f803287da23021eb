"""A local Stripe: Checkout Sessions, their hosted page, and signed ``event`` webhooks.

Written from Stripe's API reference (``POST /v1/checkout/sessions``, retrieve, expire, the
``checkout.session`` object, the error object, idempotent requests, webhook signatures) and held
to it by ``tests/contract/cardproviders/stripe`` with Stripe's own Python library. Only what Pago
uses is modelled: ``mode=payment`` with inline ``price_data`` line items and fixed-amount shipping.

Mounted under ``/stripe``; a client's base URL is ``<server>/stripe`` (``/stripe/v1/…``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from pago.devstack.cardproviders.context import FailureMode, ProviderContext

log = logging.getLogger(__name__)

API_VERSION = "2024-06-20"
"""The ``api_version`` events carry (any fixed dated version: the fake has one shape)."""
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_TTL = 24 * 3600
"""Stripe prunes keys once they are at least 24 h old; a reused key then runs anew."""
MIN_EXPIRY, MAX_EXPIRY, DEFAULT_EXPIRY = 30 * 60, 24 * 3600, 24 * 3600
"""``expires_at`` must lie 30 min to 24 h after creation; default 24 h."""
MAX_AMOUNT = 99_999_999
"""Amounts take at most eight digits (``amount_too_large`` above)."""
WEBHOOK_ATTEMPTS = 4
WEBHOOK_BACKOFF = (0.2, 0.5, 1.0)
"""Stripe retries for three days; a local server retries a few times within two seconds."""


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ZERO_DECIMAL = words("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf")
THREE_DECIMAL = words("bhd jod kwd omr tnd")
"""Sent in thousandths, but the last digit must be 0 (5.124 KWD must go as 5120 or 5130)."""
LOCALES = words(
    "auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hr hu id it ja ko lt lv ms mt "
    "nb nl pl pt pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW"
)
_CREATE_PARAMS = words(
    "adaptive_pricing after_expiration allow_promotion_codes automatic_tax "
    "billing_address_collection cancel_url client_reference_id consent_collection currency "
    "custom_fields custom_text customer customer_creation customer_email customer_update "
    "discounts expand expires_at invoice_creation line_items locale metadata mode "
    "payment_intent_data payment_method_configuration payment_method_options "
    "payment_method_types phone_number_collection redirect_on_completion return_url "
    "saved_payment_method_options setup_intent_data shipping_address_collection "
    "shipping_options submit_type subscription_data success_url tax_id_collection "
    "ui_mode"
)
_ALNUM = string.ascii_letters + string.digits


def _id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


class StripeError(Exception):
    """One of Stripe's error responses: ``{"error": {"type", "code"?, "message", "param"?}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message}
        # Stripe leaves out what does not apply rather than sending nulls.
        if code is not None:
            self.body["code"] = code
        if param is not None:
            self.body["param"] = param


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding with bracket notation, into nested dicts and lists.

    ``line_items[0][price_data][currency]=aud`` → ``{"line_items": [{"price_data": {...}}]}``;
    ``a[]=x&a[]=y`` → ``{"a": ["x", "y"]}``. Raises ``StripeError`` on a malformed name.
    """
    root: dict[str, Any] = {}
    for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        head, _, rest = name.partition("[")
        parts = [head]
        if rest:
            if not rest.endswith("]"):
                raise StripeError(400, f"Invalid parameter name: {name}", param=name)
            parts += rest[:-1].split("][")
        node: dict[str, Any] = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "" and i > 0:
                part = str(sum(1 for k in node if k.isdigit()))  # a[] appends
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise StripeError(400, f"Invalid parameter name: {name}", param=name)
                node = child
    return _listify(root)  # type: ignore[no-any-return]


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        indexes = sorted(int(k) for k in out)
        if indexes == list(range(len(indexes))):
            return [out[str(i)] for i in indexes]
    return out


def _int(value: Any, param: str, *, minimum: int = 0) -> int:
    if not isinstance(value, str) or not value.lstrip("-").isdigit():
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        )
    number = int(value)
    if number < minimum:
        raise StripeError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=param,
        )
    return number


def _str(params: Mapping[str, Any], key: str, *, max_length: int = 5000) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StripeError(400, f"Invalid string: {key}", param=key)
    if len(value) > max_length:
        raise StripeError(
            400,
            f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
            param=key,
        )
    return value


def _missing(param: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _check_amount(amount: int, currency: str, param: str) -> None:
    if amount > MAX_AMOUNT:
        raise StripeError(
            400, "Amount must be no more than 99999999", code="amount_too_large", param=param
        )
    if currency in THREE_DECIMAL and amount % 10:
        raise StripeError(
            400,
            f"Amounts in {currency} must have 0 as the last digit (the smallest unit is 10).",
            param=param,
        )


def exponent(currency: str) -> int:
    """Decimal places in Stripe's API amounts for ``currency`` (lower case)."""
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


def format_amount(amount: int, currency: str) -> str:
    places = exponent(currency)
    if places == 0:
        return f"{amount} {currency.upper()}"
    whole, frac = divmod(amount, 10**places)
    return f"{whole}.{frac:0{places}d} {currency.upper()}"


def _validate_session(params: Mapping[str, Any], now: int) -> dict[str, Any]:
    """The ``checkout.session`` a valid create call makes (``StripeError`` otherwise)."""
    unknown = sorted(set(params) - _CREATE_PARAMS)
    if unknown:
        raise StripeError(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
    mode = params.get("mode")
    if mode is None:
        raise _missing("mode")
    if mode != "payment":
        raise StripeError(
            400,
            f"Invalid mode: {mode!r}; the local Stripe supports only payment",
            param="mode",
        )
    raw_items = params.get("line_items")
    if raw_items is None:
        raise StripeError(
            400,
            "You must provide at least one line item in payment mode.",
            code="parameter_missing",
            param="line_items",
        )
    if not isinstance(raw_items, list) or not raw_items:
        raise StripeError(400, "Invalid array", param="line_items")
    currency: str | None = None
    items: list[dict[str, Any]] = []
    subtotal = 0
    for i, item in enumerate(raw_items):
        at = f"line_items[{i}]"
        if not isinstance(item, dict):
            raise StripeError(400, "Invalid object", param=at)
        if "price" in item:
            raise StripeError(
                400, f"No such price: '{item['price']}'", code="resource_missing",
                param=f"{at}[price]",
            )  # fmt: skip
        price_data = item.get("price_data")
        if not isinstance(price_data, dict):
            raise _missing(f"{at}[price_data]")
        line_currency = price_data.get("currency")
        if not isinstance(line_currency, str):
            raise _missing(f"{at}[price_data][currency]")
        line_currency = line_currency.lower()
        if currency is None:
            currency = line_currency
        elif line_currency != currency:
            raise StripeError(
                400,
                "All line items must use the same currency.",
                param=f"{at}[price_data][currency]",
            )
        product = price_data.get("product_data")
        if not isinstance(product, dict) or not isinstance(product.get("name"), str):
            raise _missing(f"{at}[price_data][product_data][name]")
        if "unit_amount" not in price_data:
            raise _missing(f"{at}[price_data][unit_amount]")
        unit = _int(price_data["unit_amount"], f"{at}[price_data][unit_amount]")
        _check_amount(unit, line_currency, f"{at}[price_data][unit_amount]")
        if "quantity" not in item:
            raise _missing(f"{at}[quantity]")
        quantity = _int(item["quantity"], f"{at}[quantity]", minimum=1)
        subtotal += unit * quantity
        items.append(
            {"id": _id("li_"), "object": "item", "description": product["name"],
             "currency": line_currency, "quantity": quantity, "amount_subtotal": unit * quantity,
             "amount_total": unit * quantity, "price": {"object": "price", "unit_amount": unit,
             "currency": line_currency, "product_data": {"name": product["name"]}}}
        )  # fmt: skip
    if currency is None:  # unreachable: raw_items is non-empty
        raise _missing("line_items")
    shipping = 0
    shipping_cost: dict[str, Any] | None = None
    options = params.get("shipping_options")
    if options is not None:
        if not isinstance(options, list) or not options or not isinstance(options[0], dict):
            raise StripeError(400, "Invalid array", param="shipping_options")
        rate = options[0].get("shipping_rate_data")
        at = "shipping_options[0][shipping_rate_data]"
        if not isinstance(rate, dict):
            raise _missing(at)
        if not isinstance(rate.get("display_name"), str):
            raise _missing(f"{at}[display_name]")
        fixed = rate.get("fixed_amount")
        if not isinstance(fixed, dict) or "amount" not in fixed:
            raise _missing(f"{at}[fixed_amount][amount]")
        if str(fixed.get("currency", "")).lower() != currency:
            raise StripeError(
                400, "The shipping rate currency must match the line items' currency.",
                param=f"{at}[fixed_amount][currency]",
            )  # fmt: skip
        shipping = _int(fixed["amount"], f"{at}[fixed_amount][amount]")
        _check_amount(shipping, currency, f"{at}[fixed_amount][amount]")
        shipping_cost = {
            "amount_subtotal": shipping, "amount_tax": 0, "amount_total": shipping,
            "shipping_rate": _id("shr_"), "display_name": rate["display_name"],
        }  # fmt: skip
    total = subtotal + shipping
    _check_amount(total, currency, "line_items")
    expires_at = now + DEFAULT_EXPIRY
    if "expires_at" in params:
        expires_at = _int(params["expires_at"], "expires_at")
        if not now + MIN_EXPIRY <= expires_at <= now + MAX_EXPIRY:
            raise StripeError(
                400,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                "Checkout Session creation.",
                param="expires_at",
            )
    locale = _str(params, "locale")
    if locale is not None and locale not in LOCALES:
        raise StripeError(400, f"Invalid locale: {locale}", param="locale")
    metadata = params.get("metadata", {})
    if metadata == "":
        metadata = {}
    if not isinstance(metadata, dict) or len(metadata) > 50:
        raise StripeError(400, "Invalid metadata: at most 50 keys", param="metadata")
    for key, value in metadata.items():
        if len(key) > 40 or not isinstance(value, str) or len(value) > 500:
            raise StripeError(
                400, "Metadata keys are at most 40 characters, values at most 500.",
                param=f"metadata[{key}]",
            )  # fmt: skip
    methods = params.get("payment_method_types", ["card"])
    if not isinstance(methods, list) or any(m != "card" for m in methods):
        raise StripeError(
            400, "The local Stripe takes only card payments.", param="payment_method_types"
        )
    ui_mode = params.get("ui_mode", "hosted")
    if ui_mode != "hosted":
        raise StripeError(400, "The local Stripe serves only hosted pages.", param="ui_mode")
    return {
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": subtotal,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": _str(params, "cancel_url"),
        "client_reference_id": _str(params, "client_reference_id", max_length=200),
        "created": now,
        "currency": currency,
        "customer": None,
        "customer_creation": "if_required",
        "customer_details": None,
        "customer_email": _str(params, "customer_email", max_length=800),
        "expires_at": expires_at,
        "livemode": False,
        "locale": locale,
        "metadata": dict(metadata),
        "mode": "payment",
        "payment_intent": None,
        "payment_method_types": list(methods),
        "payment_status": "unpaid",
        "shipping_cost": shipping_cost,
        "status": "open",
        "submit_type": None,
        "success_url": _str(params, "success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": shipping, "amount_tax": 0},
        "ui_mode": "hosted",
        "_line_items": items,
    }


def public(session: Mapping[str, Any]) -> dict[str, Any]:
    """The session as the API shows it (line items are a separate, expandable list)."""
    return {k: v for k, v in session.items() if not k.startswith("_")}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``Stripe-Signature``: ``t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes
    at: float


@dataclass
class StripeState:
    """Everything the local Stripe remembers (one account)."""

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every event, newest last (also ``GET /v1/events``)."""
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    """(event id, HTTP status or 0 for a transport error) per webhook attempt."""
    _idempotency: dict[str, _Stored] = field(default_factory=dict)
    _in_flight: set[str] = field(default_factory=set)
    _declines: set[str] = field(default_factory=set)
    _last_delivery: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)


def build(ctx: ProviderContext, state: StripeState | None = None) -> Mount:
    """The local Stripe under ``/stripe`` for ``ctx`` (``api_key``, ``webhook_secret``)."""
    st = state if state is not None else StripeState()

    def json_response(status: int, body: Any, **headers: str) -> Response:
        return JSONResponse(
            body, status_code=status, headers={"Request-Id": _id("req_", 14), **headers}
        )

    def error_response(exc: StripeError) -> Response:
        return json_response(exc.status, {"error": exc.body})

    def authenticate(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                key = base64.b64decode(credential).decode().partition(":")[0]
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_"
                "SECRET_KEY').",
            )
        if not hmac.compare_digest(key.encode(), ctx.secrets.get("api_key", "").encode()):
            raise StripeError(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}")

    async def create(request: Request) -> Response:
        try:
            authenticate(request)
            key = request.headers.get("idempotency-key")
            if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be 255 characters long and should "
                    "be ASCII.",
                    param="Idempotency-Key",
                )
            body = await request.body()
            params = parse_form(body)
            mode = ctx.faults.take()
            if mode is FailureMode.RATE_LIMITED:
                # Refused before the endpoint runs, so nothing is saved for the key.
                raise StripeError(
                    429,
                    "Request rate limit exceeded. Learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                )
            fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
            now = time.time()
            if key is not None:
                for old in [k for k, v in st._idempotency.items() if now - v.at > IDEMPOTENCY_TTL]:
                    del st._idempotency[old]
                stored = st._idempotency.get(key)
                if stored is not None:
                    if stored.fingerprint != fingerprint:
                        raise StripeError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type_="idempotency_error",
                        )
                    return Response(
                        stored.body, status_code=stored.status, media_type="application/json",
                        headers={"Request-Id": _id("req_", 14), "Idempotent-Replayed": "true",
                                 "Idempotency-Key": key},
                    )  # fmt: skip
                if key in st._in_flight:
                    raise StripeError(
                        409,
                        "There is currently another in-progress request using this Stripe API "
                        "key (or connected account) and idempotency key (if applicable). Please "
                        "try again later.",
                        type_="idempotency_error",
                        code="idempotency_key_in_use",
                    )
            # Validation errors are not saved either: only a call whose endpoint ran is.
            session = _validate_session(params, int(now))
        except StripeError as exc:
            return error_response(exc)
        if key is not None:
            st._in_flight.add(key)
        try:
            if mode is FailureMode.SERVER_ERROR:
                status, payload = (
                    500,
                    {"error": {"type": "api_error", "message": "An unknown error occurred"}},
                )
            else:
                session["id"] = _id("cs_test_", 58)
                session["url"] = f"{ctx.public_url}/pay/{session['id']}"
                st.sessions[session["id"]] = session
                if mode is FailureMode.DECLINE:
                    st._declines.add(session["id"])
                _schedule_expiry(session["id"], session["expires_at"] - now)
                status, payload = 200, public(session)
            encoded = json.dumps(payload).encode()
            if key is not None:
                # Saved as the endpoint finishes, 500s included (Stripe's v1 idempotency).
                st._idempotency[key] = _Stored(fingerprint, status, encoded, now)
        finally:
            if key is not None:
                st._in_flight.discard(key)
        if mode is FailureMode.TIMEOUT:
            # The session exists and the key holds it: only the answer is late. A client that
            # gave up retries with the same key and gets this session, or leaves an orphan.
            await asyncio.sleep(ctx.faults.timeout_seconds)
        headers = {"Request-Id": _id("req_", 14)}
        if key is not None:
            headers["Idempotency-Key"] = key
        return Response(encoded, status_code=status, media_type="application/json", headers=headers)

    def find(request: Request) -> dict[str, Any]:
        session_id = request.path_params["session_id"]
        session = st.sessions.get(session_id)
        if session is None:
            raise StripeError(
                404, f"No such checkout.session: '{session_id}'", code="resource_missing",
                param="session",
            )  # fmt: skip
        _expire_if_due(session)
        return session

    async def retrieve(request: Request) -> Response:
        try:
            authenticate(request)
            return json_response(200, public(find(request)))
        except StripeError as exc:
            return error_response(exc)

    async def expire(request: Request) -> Response:
        try:
            authenticate(request)
            session = find(request)
            if session["status"] != "open":
                raise StripeError(
                    400,
                    'Only Checkout Sessions with a status in ["open"] can be expired. This '
                    f'Checkout Session has a status of "{session["status"]}".',
                )
            _set_expired(session)
            return json_response(200, public(session))
        except StripeError as exc:
            return error_response(exc)

    async def list_events(request: Request) -> Response:
        try:
            authenticate(request)
        except StripeError as exc:
            return error_response(exc)
        data = list(reversed(st.events))  # newest first, as Stripe lists
        return json_response(
            200, {"object": "list", "data": data, "has_more": False, "url": "/v1/events"}
        )

    async def retrieve_event(request: Request) -> Response:
        try:
            authenticate(request)
        except StripeError as exc:
            return error_response(exc)
        for event in st.events:
            if event["id"] == request.path_params["event_id"]:
                return json_response(200, event)
        return error_response(
            StripeError(404, f"No such event: '{request.path_params['event_id']}'",
                        code="resource_missing", param="id")
        )  # fmt: skip

    def _schedule_expiry(session_id: str, delay: float) -> None:
        def due() -> None:
            session = st.sessions.get(session_id)
            if session is not None:
                _expire_if_due(session)

        asyncio.get_running_loop().call_later(max(delay, 0.0), due)

    def _expire_if_due(session: dict[str, Any]) -> None:
        if session["status"] == "open" and time.time() >= session["expires_at"]:
            _set_expired(session)

    def _set_expired(session: dict[str, Any]) -> None:
        session["status"] = "expired"
        session["url"] = None
        emit("checkout.session.expired", session)

    def emit(event_type: str, session: dict[str, Any]) -> None:
        event = {
            "id": _id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": public(session)},
            "livemode": False,
            "pending_webhooks": 1 if ctx.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        st.events.append(event)
        if ctx.webhook_url is None:
            return
        # One session's events go out in the order they happened (Stripe promises no order;
        # Pago resolves any by status precedence, but tests read better in order).
        previous = st._last_delivery.get(session["id"])
        task = asyncio.get_running_loop().create_task(deliver(event, previous))
        st._last_delivery[session["id"]] = task
        st._tasks.add(task)
        task.add_done_callback(st._tasks.discard)

    async def deliver(event: dict[str, Any], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        url = ctx.webhook_url
        if url is None:
            return
        body = json.dumps(event, indent=2).encode()
        secret = ctx.secrets.get("webhook_secret", "")
        async with httpx.AsyncClient(timeout=10) as client:
            for attempt in range(WEBHOOK_ATTEMPTS):
                # Each attempt is signed at its own time, as Stripe does.
                headers = {
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": sign(secret, int(time.time()), body),
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                }
                try:
                    response = await client.post(url, content=body, headers=headers)
                    st.deliveries.append((event["id"], response.status_code))
                    if 200 <= response.status_code < 300:
                        return
                except httpx.HTTPError as exc:
                    st.deliveries.append((event["id"], 0))
                    log.info("stripe webhook %s: %s", event["id"], exc)
                if attempt < len(WEBHOOK_BACKOFF):
                    await asyncio.sleep(WEBHOOK_BACKOFF[attempt])
        log.warning("stripe webhook %s gave up after %d attempts", event["id"], WEBHOOK_ATTEMPTS)

    async def page(request: Request) -> Response:
        session = st.sessions.get(request.path_params["session_id"])
        if session is None:
            return HTMLResponse(_page("Not found", "<p>No such Checkout Session.</p>"), 404)
        _expire_if_due(session)
        return HTMLResponse(_hosted_page(session))

    async def submit(request: Request) -> Response:
        session = st.sessions.get(request.path_params["session_id"])
        if session is None:
            return HTMLResponse(_page("Not found", "<p>No such Checkout Session.</p>"), 404)
        _expire_if_due(session)
        if session["status"] != "open":
            return HTMLResponse(_hosted_page(session), 409)
        action = dict(parse_qsl((await request.body()).decode())).get("action")
        if action not in ("pay", "decline"):
            return HTMLResponse(_page("Bad request", "<p>Choose Pay or Decline.</p>"), 400)
        session["status"] = "complete"
        session["url"] = None
        session["customer_details"] = {"email": session["customer_email"], "name": None}
        session["payment_intent"] = _id("pi_")
        if action == "pay" and session["id"] not in st._declines:
            session["payment_status"] = "paid"
            emit("checkout.session.completed", session)
            target = session["success_url"]
        else:
            # A card Checkout declines synchronously and keeps the session open, so no event
            # carries a card decline. The one checkout.session event that means "the payment
            # failed" is async_payment_failed (delayed methods): Checkout completes the session
            # unpaid, then reports the failure. Sending that pair gives the merchant's side a
            # real Stripe failure to handle.
            emit("checkout.session.completed", session)
            emit("checkout.session.async_payment_failed", session)
            target = session["cancel_url"]
        if target:
            return RedirectResponse(target.replace("{CHECKOUT_SESSION_ID}", session["id"]), 303)
        return HTMLResponse(_hosted_page(session))

    return Mount(
        "/stripe",
        routes=[
            Route("/v1/checkout/sessions", create, methods=["POST"]),
            Route("/v1/checkout/sessions/{session_id}", retrieve, methods=["GET"]),
            Route("/v1/checkout/sessions/{session_id}/expire", expire, methods=["POST"]),
            Route("/v1/events", list_events, methods=["GET"]),
            Route("/v1/events/{event_id}", retrieve_event, methods=["GET"]),
            Route("/pay/{session_id}", page, methods=["GET"]),
            Route("/pay/{session_id}", submit, methods=["POST"]),
        ],
    )


def _page(title: str, content: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Local Stripe Checkout</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 2rem auto; padding: 0 1rem;
  color: #1a1f36; }}
table {{ width: 100%; border-collapse: collapse; }} td {{ padding: .25rem 0; }}
td:last-child {{ text-align: right; }}
.total td {{ font-weight: 600; border-top: 1px solid #ccc; }}
button {{ font-size: 1rem; padding: .75rem 1.25rem; margin: .5rem .5rem 0 0; border-radius: 6px;
  border: 2px solid #635bff; cursor: pointer; }}
button[value=pay] {{ background: #635bff; color: #fff; }}
button[value=decline] {{ background: #fff; color: #3c3aa8; }}
button:focus-visible {{ outline: 3px solid #1a1f36; outline-offset: 2px; }}
</style></head>
<body><main>{content}</main></body></html>
"""


def _hosted_page(session: Mapping[str, Any]) -> str:
    currency = session["currency"]
    total = format_amount(session["amount_total"], currency)
    rows = "".join(
        f"<tr><td>{html.escape(item['description'])} × {item['quantity']}</td>"
        f"<td>{format_amount(item['amount_total'], currency)}</td></tr>"
        for item in session["_line_items"]
    )
    if session["shipping_cost"]:
        cost = session["shipping_cost"]
        rows += (
            f"<tr><td>{html.escape(cost['display_name'])}</td>"
            f"<td>{format_amount(cost['amount_total'], currency)}</td></tr>"
        )
    rows += f'<tr class="total"><td>Total</td><td id="amount-total">{total}</td></tr>'
    summary = f'<table aria-label="Order summary">{rows}</table>'
    if session["status"] == "open":
        actions = (
            f'<form method="post" action="{html.escape(session["id"])}">'
            f'<button type="submit" name="action" value="pay">Pay {total}</button>'
            '<button type="submit" name="action" value="decline">Decline</button></form>'
        )
        status = ""
    else:
        actions = ""
        words = {
            ("complete", "paid"): "Payment complete.",
            ("complete", "unpaid"): "Payment declined.",
            ("expired", "unpaid"): "This Checkout Session has expired.",
        }
        status = words.get((session["status"], session["payment_status"]), session["status"])
        status = f'<p role="status">{status}</p>'
    email = session["customer_email"]
    who = f"<p>Paying as {html.escape(email)}</p>" if email else ""
    return _page(
        f"Pay {total}",
        f"<h1>Pay {total}</h1>{who}{summary}{status}{actions}"
        "<p><small>Local Stripe (test mode): no card is charged.</small></p>",
    )
