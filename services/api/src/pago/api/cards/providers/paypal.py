"""PayPal, Orders v2 with an explicit capture: a thin async client of PayPal's REST API.

Flow: ``create_checkout`` creates an order (``intent: CAPTURE``) with ``custom_id`` = Pago's
session id and returns its ``payer-action`` (or ``approve``) link; the payer approves at PayPal;
PayPal sends ``CHECKOUT.ORDER.APPROVED`` (no outcome yet) and ``on_notification`` captures the
order; the capture's own webhook, ``PAYMENT.CAPTURE.COMPLETED`` or ``.DENIED``/``.DECLINED``,
moves the session.

- Amounts are decimal strings made from minor units with integer arithmetic (never float).
- The OAuth token (client credentials) is cached until 5 minutes — or half its lifetime, when
  that is shorter — before ``expires_in``; a 401 on a call drops it and retries once.
- ``PayPal-Request-Id`` carries the orchestrator's idempotency key (PayPal keeps it 6 h; at most
  108 characters, so a longer key is sent as its SHA-256); the capture's id is derived from the
  order id, so every capture attempt of one order is the same request.
- Webhooks are verified with PayPal's ``POST /v1/notifications/verify-webhook-signature`` and
  the configured webhook id; ``webhook_event`` is the received body itself, byte for byte, spliced
  into the request (a re-serialised event can differ from what PayPal signed).
- ``expire`` does nothing: Orders v2 has no way to cancel an order with ``intent: CAPTURE``; one
  nobody approves lapses at PayPal (3 hours by default, up to 72 by agreement), and its approval
  link is only ever in the answer to the create call.
- Errors: a timeout, a connection failure, a 5xx, a 429, or credentials PayPal refuses (an
  account that cannot take payments now, which another provider can) are ``ProviderUnavailable``;
  any other 4xx is ``ProviderRejected`` with PayPal's ``name`` and first ``issue``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from pago.api.cards.providers.base import (
    Address,
    Capabilities,
    CardOrder,
    InvalidSignature,
    ProviderCheckout,
    ProviderNotification,
    ProviderRejected,
    ProviderStatus,
    ProviderTimeout,
    ProviderUnavailable,
    WebhookAck,
)
from pago.common.enums import CardProvider, CardSessionStatus

_CODES = (
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD SEK CHF THB"
)
PAYPAL_CURRENCIES = frozenset([*_CODES.split(" "), "USD"])
"""The currencies PayPal's REST API takes (KWD, for one, is not among them)."""

APPROVAL_WINDOW = timedelta(hours=3)
"""How long PayPal keeps an unapproved order payable by default."""

REQUEST_ID_MAX = 108

APPROVED = "CHECKOUT.ORDER.APPROVED"
_OUTCOMES: Mapping[str, CardSessionStatus | None] = {
    APPROVED: None,
    "CHECKOUT.ORDER.COMPLETED": None,
    "PAYMENT.CAPTURE.PENDING": None,
    "PAYMENT.CAPTURE.COMPLETED": CardSessionStatus.COMPLETED,
    "PAYMENT.CAPTURE.DENIED": CardSessionStatus.FAILED,
    "PAYMENT.CAPTURE.DECLINED": CardSessionStatus.FAILED,
    "CHECKOUT.ORDER.VOIDED": CardSessionStatus.CANCELLED,
}
_WEBHOOK_HEADERS = (
    "paypal-auth-algo",
    "paypal-cert-url",
    "paypal-transmission-id",
    "paypal-transmission-sig",
    "paypal-transmission-time",
)


def to_value(minor: int, exponent: int) -> str:
    """``14076, 2`` → ``"140.76"``; ``1500, 0`` → ``"1500"``: PayPal's ``value`` string."""
    if exponent == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def _money(currency: str, minor: int, exponent: int) -> dict[str, str]:
    return {"currency_code": currency, "value": to_value(minor, exponent)}


def _parse(raw: bytes) -> Any:
    return json.loads(raw, parse_float=Decimal)


def _address(address: Address) -> dict[str, str]:
    out = {"address_line_1": address.line1}
    if address.line2:
        out["address_line_2"] = address.line2
    out["admin_area_2"] = address.city
    if address.state:
        out["admin_area_1"] = address.state
    out["postal_code"] = address.postal_code
    out["country_code"] = address.country
    return out


def order_body(order: CardOrder) -> dict[str, Any]:
    """The create-order request for ``order``: one purchase unit whose breakdown sums exactly."""
    currency, exponent = order.currency, order.exponent
    item_total = sum(item.unit_price * item.quantity for item in order.items)
    unit: dict[str, Any] = {
        "reference_id": order.order_reference[:256],
        "custom_id": order.session_id,
        "amount": {
            **_money(currency, order.total, exponent),
            "breakdown": {
                "item_total": _money(currency, item_total, exponent),
                "shipping": _money(currency, order.shipping, exponent),
                "tax_total": _money(currency, order.tax, exponent),
            },
        },
    }
    if order.items:
        unit["items"] = [
            {
                "name": item.name[:127],
                **({"sku": item.sku[:127]} if item.sku else {}),
                "quantity": str(item.quantity),
                "unit_amount": _money(currency, item.unit_price, exponent),
            }
            for item in order.items
        ]
    if order.shipping_address is not None:
        unit["shipping"] = {
            "name": {"full_name": f"{order.customer_first_name} {order.customer_last_name}"},
            "address": _address(order.shipping_address),
        }
    context: dict[str, Any] = {
        "return_url": order.success_url,
        "cancel_url": order.failure_url,
        "user_action": "PAY_NOW",
        "shipping_preference": "SET_PROVIDED_ADDRESS" if order.shipping_address else "NO_SHIPPING",
    }
    if order.locale:
        # PayPal takes BCP 47 (en-AU); the seed's locales are POSIX-style (en_AU).
        context["locale"] = order.locale.replace("_", "-")
    return {
        "intent": "CAPTURE",
        "purchase_units": [unit],
        "payment_source": {
            "paypal": {
                "experience_context": context,
                "email_address": order.customer_email,
                "name": {
                    "given_name": order.customer_first_name,
                    "surname": order.customer_last_name,
                },
                "address": _address(order.billing_address),
            }
        },
    }


def request_id(key: str) -> str:
    """A ``PayPal-Request-Id`` for ``key``: itself when PayPal takes it, else its SHA-256."""
    if len(key) <= REQUEST_ID_MAX:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def _link(body: Mapping[str, Any], *rels: str) -> str | None:
    for rel in rels:
        for link in body.get("links") or []:
            if link.get("rel") == rel:
                return str(link["href"])
    return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _capture_outcome(order: Mapping[str, Any]) -> CardSessionStatus | None:
    status = order.get("status")
    if status == "VOIDED":
        return CardSessionStatus.CANCELLED
    if status != "COMPLETED":
        return None
    captures = [
        capture
        for unit in order.get("purchase_units") or []
        for capture in (unit.get("payments") or {}).get("captures") or []
    ]
    if not captures:
        return None
    capture_status = captures[-1].get("status")
    if capture_status in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"):
        return CardSessionStatus.COMPLETED
    if capture_status in ("DECLINED", "FAILED"):
        return CardSessionStatus.FAILED
    return None


class PayPalAdapter:
    """One PayPal REST app (client id and secret, one webhook id) at ``base_url``."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        webhook_id: str,
        capabilities: Capabilities | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._credentials = httpx.BasicAuth(client_id, client_secret)
        self._webhook_id = webhook_id
        self._capabilities = capabilities or Capabilities(
            currencies=PAYPAL_CURRENCIES, countries=None
        )
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._clock = clock
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    @property
    def name(self) -> CardProvider:
        return CardProvider.PAYPAL

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # --- HTTP ------------------------------------------------------------------------------

    def _unavailable(self, detail: str) -> ProviderUnavailable:
        return ProviderUnavailable(CardProvider.PAYPAL, detail)

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_until:
                return self._token
            started = self._clock()
            try:
                response = await self._client.post(
                    f"{self._base}/v1/oauth2/token",
                    auth=self._credentials,
                    data={"grant_type": "client_credentials"},
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as error:
                raise self._unavailable(f"token: {type(error).__name__}") from error
            if response.status_code != 200:
                # Refused credentials make this account unusable for now, whatever the order:
                # routing should move on to another provider.
                raise self._unavailable(f"token: HTTP {response.status_code}")
            body = _parse(response.content)
            expires_in = int(body["expires_in"])
            self._token = str(body["access_token"])
            self._token_until = started + expires_in - min(300, expires_in / 2)
            return self._token

    async def _call(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        for attempt in range(2):
            token = await self._access_token()
            try:
                response = await self._client.request(
                    method,
                    f"{self._base}{path}",
                    content=content,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        **(headers or {}),
                    },
                )
            except httpx.TimeoutException as error:
                raise ProviderTimeout(CardProvider.PAYPAL, f"{method} {path}: timed out") from error
            except httpx.HTTPError as error:
                raise self._unavailable(f"{method} {path}: {type(error).__name__}") from error
            if response.status_code == 401 and attempt == 0:
                async with self._token_lock:
                    if self._token == token:
                        self._token = None
                continue
            return response
        return response

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        detail = f"{what}: HTTP {response.status_code}"
        try:
            body = _parse(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail += f" {body.get('name', '')}"
            details = body.get("details") or []
            if details and isinstance(details[0], dict):
                first = details[0]
                detail += f" {first.get('issue', '')} {first.get('field', '')}".rstrip()
            if body.get("debug_id"):
                detail += f" (debug_id {body['debug_id']})"
        if response.status_code >= 500 or response.status_code in (401, 429):
            raise self._unavailable(detail)
        raise ProviderRejected(CardProvider.PAYPAL, detail)

    # --- the protocol ----------------------------------------------------------------------

    async def create_checkout(self, order: CardOrder, *, idempotency_key: str) -> ProviderCheckout:
        response = await self._call(
            "POST",
            "/v2/checkout/orders",
            content=json.dumps(order_body(order)).encode(),
            headers={
                "PayPal-Request-Id": request_id(idempotency_key),
                "Prefer": "return=representation",
            },
        )
        self._raise_for(response, "create order")
        body = _parse(response.content)
        url = _link(body, "payer-action", "approve")
        if url is None:
            raise self._unavailable(f"create order: no approval link for {body.get('id')}")
        created = _parse_time(body.get("create_time")) or datetime.now(UTC)
        return ProviderCheckout(
            provider=CardProvider.PAYPAL,
            reference=str(body["id"]),
            checkout_url=url,
            expires_at=created + APPROVAL_WINDOW,
            raw_status=str(body["status"]),
        )

    async def retrieve(self, reference: str) -> ProviderStatus:
        response = await self._call("GET", f"/v2/checkout/orders/{reference}")
        self._raise_for(response, "get order")
        body = _parse(response.content)
        return ProviderStatus(
            reference=reference, raw_status=str(body["status"]), outcome=_capture_outcome(body)
        )

    async def expire(self, reference: str) -> None:
        """Nothing to do: see the module's docstring (an unapproved order lapses at PayPal)."""

    async def capture(self, reference: str) -> ProviderStatus:
        """Capture an approved order; a second call (or one after PayPal already captured it)
        answers the same capture."""
        response = await self._call(
            "POST",
            f"/v2/checkout/orders/{reference}/capture",
            content=b"{}",
            headers={
                "PayPal-Request-Id": f"capture-{reference}",
                "Prefer": "return=representation",
            },
        )
        if response.status_code == 422 and b"ORDER_ALREADY_CAPTURED" in response.content:
            return await self.retrieve(reference)
        self._raise_for(response, "capture order")
        body = _parse(response.content)
        return ProviderStatus(
            reference=reference, raw_status=str(body["status"]), outcome=_capture_outcome(body)
        )

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ProviderNotification]:
        missing = [name for name in _WEBHOOK_HEADERS if not headers.get(name)]
        if missing:
            raise InvalidSignature(CardProvider.PAYPAL, f"missing {', '.join(missing)}")
        try:
            event = _parse(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidSignature(CardProvider.PAYPAL, "body is not JSON") from error
        if not isinstance(event, dict):
            raise InvalidSignature(CardProvider.PAYPAL, "body is not a JSON object")
        fields = {
            "auth_algo": headers["paypal-auth-algo"],
            "cert_url": headers["paypal-cert-url"],
            "transmission_id": headers["paypal-transmission-id"],
            "transmission_sig": headers["paypal-transmission-sig"],
            "transmission_time": headers["paypal-transmission-time"],
            "webhook_id": self._webhook_id,
        }
        # The event exactly as received, not re-serialised: what PayPal's signature covers.
        request = json.dumps(fields).encode()[:-1] + b',"webhook_event":' + body.strip() + b"}"
        response = await self._call(
            "POST", "/v1/notifications/verify-webhook-signature", content=request
        )
        self._raise_for(response, "verify webhook signature")
        verdict = _parse(response.content)
        if verdict.get("verification_status") != "SUCCESS":
            raise InvalidSignature(CardProvider.PAYPAL, "verification_status FAILURE")
        return [self._notification(event)]

    def _notification(self, event: Mapping[str, Any]) -> ProviderNotification:
        event_type = str(event.get("event_type", ""))
        resource = event.get("resource") or {}
        if event_type.startswith("CHECKOUT.ORDER."):
            reference = resource.get("id")
            units = resource.get("purchase_units") or [{}]
            session_id = units[0].get("custom_id")
        else:
            related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
            reference = related.get("order_id") or resource.get("id")
            session_id = resource.get("custom_id")
        return ProviderNotification(
            provider=CardProvider.PAYPAL,
            event_id=str(event["id"]),
            event_type=event_type,
            reference=str(reference or ""),
            session_id=str(session_id) if session_id else None,
            outcome=_OUTCOMES.get(event_type),
            occurred_at=_parse_time(event.get("create_time")),
        )

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck()

    async def reconcile(self, reference: str) -> ProviderStatus:
        """An order the payer approved is captured here when its ``CHECKOUT.ORDER.APPROVED``
        capture failed or never ran (the same ``PayPal-Request-Id``: never a second capture)."""
        status = await self.retrieve(reference)
        if status.raw_status == "APPROVED":
            return await self.capture(reference)
        return status

    async def on_notification(self, notification: ProviderNotification) -> None:
        """An approved order is captured (PayPal never captures one by itself)."""
        if notification.event_type == APPROVED and notification.reference:
            await self.capture(notification.reference)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
