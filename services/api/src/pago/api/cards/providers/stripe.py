"""Stripe Checkout Sessions, spoken over httpx (no SDK): create, retrieve, expire, webhooks.

Wire format (Stripe's API reference): form-encoded bodies with bracket notation
(``line_items[0][price_data][unit_amount]=11900``), ``Authorization: Bearer sk_…``,
``Idempotency-Key`` (≤ 255 chars, kept 24 h by Stripe: a retry with the same key and body
returns the first answer), JSON answers, errors as ``{"error": {"type", "code", "message",
"param"}}``, and webhooks signed ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256>``.

The order goes as one line item per order item, a "Tax" line for the tax (Checkout has no
fixed tax amount) and the shipping as a fixed-amount shipping option, so Stripe's
``amount_total`` is Pago's ``total``. The Pago session id goes in ``client_reference_id`` and in
``metadata[pago_session_id]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from pago.api.cards.providers.base import (
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

DEFAULT_BASE_URL = "https://api.stripe.com"
API_VERSION = "2024-06-20"
"""Sent as ``Stripe-Version`` so the answers' shape does not follow the account's default."""
SIGNATURE_TOLERANCE = 300
"""Seconds a ``Stripe-Signature`` timestamp may be off: Stripe's libraries' default."""
MAX_IDEMPOTENCY_KEY = 255

ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV"}
    | {"XAF", "XOF", "XPF"}
)
"""Amounts in whole units (¥500 is 500)."""
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
"""Amounts in thousandths whose last digit must be 0 (5.124 KWD must go as 5120 or 5130)."""
TWO_DECIMAL_OVERRIDES = {"ISK": 2}
"""ISK is zero-decimal at ISO 4217, but Stripe keeps two decimals in its API for backwards
compatibility (5 ISK is 500, and must be a multiple of 100)."""
MAX_AMOUNT = 99_999_999
"""Stripe amounts take at most eight digits."""

MIN_CHARGE: Mapping[str, Decimal] = {
    currency: Decimal(amount)
    for currency, amount in {
        "USD": "0.50", "AUD": "0.50", "CAD": "0.50", "EUR": "0.50", "NZD": "0.50",
        "CHF": "0.50", "SGD": "0.50", "GBP": "0.30", "JPY": "50", "HKD": "4.00",
        "DKK": "2.50", "NOK": "3.00", "SEK": "3.00", "MXN": "10", "PLN": "2.00",
        "CZK": "15.00", "HUF": "175.00", "AED": "2.00", "INR": "0.50", "BRL": "0.50",
    }.items()
}  # fmt: skip
"""Stripe's published minimum charge per currency, in major units (others: none known)."""
DEFAULT_CURRENCIES = frozenset(MIN_CHARGE) | THREE_DECIMAL | {"KRW", "CLP", "VND"}

LOCALES = frozenset(
    {"bg", "cs", "da", "de", "el", "en", "en-GB", "es", "es-419", "et", "fi", "fil", "fr"}
    | {"fr-CA", "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl", "pl"}
    | {"pt", "pt-BR", "ro", "ru", "sk", "sl", "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW"}
)
"""Checkout's locales; anything else goes as ``auto`` (the browser's language)."""
MIN_EXPIRY = timedelta(minutes=31)
MAX_EXPIRY = timedelta(hours=23, minutes=59)
"""Stripe takes ``expires_at`` 30 min to 24 h ahead; a minute's margin for clock skew."""

_OUTCOMES = {
    "checkout.session.async_payment_succeeded": CardSessionStatus.COMPLETED,
    "checkout.session.async_payment_failed": CardSessionStatus.FAILED,
    "checkout.session.expired": CardSessionStatus.EXPIRED,
}
_PAID = frozenset({"paid", "no_payment_required"})


def iso_exponent(currency: str) -> int:
    """ISO 4217 minor-unit digits of the currencies this module knows (others: 2), for the
    capability bounds only: orders carry their own exponent."""
    if currency in THREE_DECIMAL:
        return 3
    if currency == "MGA":
        return 2  # zero-decimal at Stripe, two places at ISO 4217
    return 0 if currency in ZERO_DECIMAL or currency in TWO_DECIMAL_OVERRIDES else 2


def stripe_exponent(currency: str, iso_exponent: int) -> int:
    """Decimal places of ``currency`` in Stripe's API amounts."""
    if currency in ZERO_DECIMAL:
        return 0
    return TWO_DECIMAL_OVERRIDES.get(currency, iso_exponent)


def to_stripe_amount(amount: int, currency: str, iso_exponent: int) -> int:
    """Pago minor units (ISO 4217 exponent) → Stripe's amount; ``ValueError`` if Stripe cannot
    take it exactly."""
    shift = stripe_exponent(currency, iso_exponent) - iso_exponent
    scale = int(10 ** abs(shift))
    if shift >= 0:
        value = amount * scale
    else:
        value, rest = divmod(amount, scale)
        if rest:
            raise ValueError(f"{currency} takes whole units at Stripe; {amount} is not")
    if currency in THREE_DECIMAL and value % 10:
        raise ValueError(f"Stripe takes {currency} amounts with 0 as the last digit, not {value}")
    if value > MAX_AMOUNT:
        raise ValueError(f"Stripe takes at most {MAX_AMOUNT} ({currency}), not {value}")
    return value


def _from_stripe_bound(value: int, currency: str, iso_exponent: int, *, up: bool) -> int:
    shift = stripe_exponent(currency, iso_exponent) - iso_exponent
    scale = int(10 ** abs(shift))
    if shift <= 0:
        return value * scale
    whole, rest = divmod(value, scale)
    return whole + (1 if up and rest else 0)


def form_pairs(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's bracket notation: ``{"a": [{"b": 1}]}`` → ``[("a[0][b]", "1")]``."""
    pairs: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{name}[{key}]" if name else str(key), item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{name}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))

    walk(prefix, params)
    return pairs


def stripe_locale(locale: str | None) -> str:
    """Pago's ``en_AU`` → a Checkout locale (``en``), or ``auto``."""
    if not locale:
        return "auto"
    tag = locale.replace("_", "-")
    if tag in LOCALES:
        return tag
    language = tag.split("-")[0].lower()
    return language if language in LOCALES else "auto"


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """``t=<ts>,v1=<hex>[,v1=<hex>…][,v0=…]`` → (timestamp, v1 signatures)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit():
                raise ValueError("timestamp is not an integer")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise ValueError("no timestamp")
    if not signatures:
        raise ValueError("no v1 signature")
    return timestamp, signatures


def _session_outcome(session: Mapping[str, Any]) -> CardSessionStatus | None:
    if session.get("status") == "complete" and session.get("payment_status") in _PAID:
        return CardSessionStatus.COMPLETED
    if session.get("status") == "expired":
        return CardSessionStatus.EXPIRED
    return None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) else None


class StripeAdapter:
    """One Stripe account: its secret key, its webhook endpoint's signing secret(s)."""

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str | Sequence[str],
        base_url: str = DEFAULT_BASE_URL,
        currencies: Iterable[str] | None = None,
        timeout: float = 10.0,
        tolerance: int = SIGNATURE_TOLERANCE,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``webhook_secret``: several while Stripe rolls the endpoint's secret (each signs a
        ``v1``). ``currencies``: upper-case ISO codes the account takes (default: a common set
        with minimums known)."""
        self._api_key = api_key
        secrets = [webhook_secret] if isinstance(webhook_secret, str) else list(webhook_secret)
        self._webhook_secrets = [s.encode() for s in secrets]
        self._tolerance = tolerance
        self._clock = clock
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )
        codes = frozenset(c.upper() for c in (currencies or DEFAULT_CURRENCIES))
        self._capabilities = Capabilities(
            currencies=codes,
            countries=None,
            min_amount={
                c: int(MIN_CHARGE[c].scaleb(iso_exponent(c))) for c in codes if c in MIN_CHARGE
            },
            max_amount={
                c: _from_stripe_bound(MAX_AMOUNT, c, iso_exponent(c), up=False) for c in codes
            },
        )

    @property
    def name(self) -> CardProvider:
        return CardProvider.STRIPE

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- checkout --------------------------------------------------------------------------

    def checkout_params(self, order: CardOrder, *, now: datetime | None = None) -> dict[str, Any]:
        """The create call's parameters for ``order`` (``ProviderRejected`` if Stripe cannot
        take its amounts exactly)."""
        currency, exp = order.currency.upper(), order.exponent
        if currency not in self._capabilities.currencies:
            raise ProviderRejected(self.name, f"this Stripe account does not take {currency}")
        try:
            total = to_stripe_amount(order.total, currency, exp)
            items = [
                (item.name, to_stripe_amount(item.unit_price, currency, exp), item.quantity)
                for item in order.items
            ]
            if order.tax:
                items.append(("Tax", to_stripe_amount(order.tax, currency, exp), 1))
            shipping = to_stripe_amount(order.shipping, currency, exp)
        except ValueError as exc:
            try:
                total = to_stripe_amount(order.total, currency, exp)
            except ValueError:
                raise ProviderRejected(self.name, str(exc)) from exc
            # Only a part is unrepresentable (a KWD item price ending in 5): one line for the
            # whole order keeps the total exact.
            items, shipping = [(f"Order {order.order_reference}", total, 1)], 0
        if sum(amount * qty for _, amount, qty in items) + shipping != total:
            raise ProviderRejected(self.name, "items, tax and shipping do not add up to total")
        lower = currency.lower()
        now = now or datetime.fromtimestamp(self._clock(), UTC)
        expires_at = min(max(order.expires_at, now + MIN_EXPIRY), now + MAX_EXPIRY)
        params: dict[str, Any] = {
            "mode": "payment",
            "payment_method_types": ["card"],
            "line_items": [
                {
                    "price_data": {
                        "currency": lower,
                        "unit_amount": amount,
                        "product_data": {"name": name[:250]},
                    },
                    "quantity": quantity,
                }
                for name, amount, quantity in items
            ],
            "success_url": order.success_url,
            "cancel_url": order.failure_url,
            "client_reference_id": order.session_id,
            "customer_email": order.customer_email,
            "metadata": {
                "pago_session_id": order.session_id,
                "order_reference": order.order_reference[:500],
            },
            "expires_at": int(expires_at.timestamp()),
            "locale": stripe_locale(order.locale),
        }
        if shipping:
            params["shipping_options"] = [
                {
                    "shipping_rate_data": {
                        "type": "fixed_amount",
                        "display_name": "Shipping",
                        "fixed_amount": {"amount": shipping, "currency": lower},
                    }
                }
            ]
        return params

    async def create_checkout(self, order: CardOrder, *, idempotency_key: str) -> ProviderCheckout:
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ProviderRejected(self.name, "Idempotency-Key must be 1-255 characters")
        session = await self._request(
            "POST",
            "/v1/checkout/sessions",
            form=self.checkout_params(order),
            idempotency_key=idempotency_key,
        )
        try:
            return ProviderCheckout(
                provider=self.name,
                reference=str(session["id"]),
                checkout_url=str(session["url"]),
                expires_at=_timestamp(session.get("expires_at")),
                raw_status=str(session["status"]),
            )
        except KeyError as exc:
            raise ProviderUnavailable(self.name, f"checkout.session without {exc}") from exc

    async def retrieve(self, reference: str) -> ProviderStatus:
        session = await self._request("GET", f"/v1/checkout/sessions/{quote(reference, safe='')}")
        return ProviderStatus(
            reference=reference,
            raw_status=str(session.get("status")),
            outcome=_session_outcome(session),
        )

    async def reconcile(self, reference: str) -> ProviderStatus:
        """No follow-up to make up for: the status as it is."""
        return await self.retrieve(reference)

    async def expire(self, reference: str) -> None:
        """Stripe expires only ``open`` sessions: one already expired counts as done, one the
        payer completed stays ``ProviderRejected``."""
        path = f"/v1/checkout/sessions/{quote(reference, safe='')}/expire"
        try:
            await self._request("POST", path, form={})
        except ProviderRejected:
            status = await self.retrieve(reference)
            if status.raw_status != "expired":
                raise

    # -- webhooks --------------------------------------------------------------------------

    def verify_signature(self, header: str | None, body: bytes) -> None:
        """Stripe's scheme: HMAC-SHA256 over ``"<t>.<body>"``, any ``v1`` matching any of the
        endpoint's secrets, ``t`` within the tolerance. Raises ``InvalidSignature``."""
        if not header:
            raise InvalidSignature(self.name, "no Stripe-Signature header")
        try:
            timestamp, signatures = parse_signature_header(header)
        except ValueError as exc:
            raise InvalidSignature(self.name, f"malformed Stripe-Signature: {exc}") from exc
        signed = f"{timestamp}.".encode() + body
        matched = False
        for secret in self._webhook_secrets:
            expected = hmac.new(secret, signed, hashlib.sha256).hexdigest().encode()
            for candidate in signatures:
                # Every comparison runs (no early exit), each in constant time.
                matched |= hmac.compare_digest(expected, candidate.encode())
        if not matched:
            raise InvalidSignature(self.name, "no v1 signature matches")
        if abs(self._clock() - timestamp) > self._tolerance:
            raise InvalidSignature(self.name, "timestamp outside the tolerance")

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ProviderNotification]:
        self.verify_signature(headers.get("stripe-signature"), body)
        try:
            event = json.loads(body, parse_float=Decimal)
            event_type, event_id = str(event["type"]), str(event["id"])
            session = event["data"]["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSignature(self.name, "signed body is not a Stripe event") from exc
        if not isinstance(session, dict) or session.get("object") != "checkout.session":
            return []  # not about a Checkout Session: nothing of Pago's moves
        outcome: CardSessionStatus | None
        if event_type == "checkout.session.completed":
            # Unpaid here means a delayed method: async_payment_succeeded/failed follows.
            outcome = _session_outcome(session)
        else:
            outcome = _OUTCOMES.get(event_type)
        metadata = session.get("metadata") or {}
        session_id = session.get("client_reference_id") or metadata.get("pago_session_id")
        return [
            ProviderNotification(
                provider=self.name,
                event_id=event_id,
                event_type=event_type,
                reference=str(session.get("id")),
                session_id=str(session_id) if session_id else None,
                outcome=outcome,
                occurred_at=_timestamp(event.get("created")),
            )
        ]

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck()  # any 2xx; Stripe reads no body

    async def on_notification(self, notification: ProviderNotification) -> None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- HTTP ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Stripe-Version": API_VERSION}
        content: bytes | None = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = urlencode(form_pairs(form)).encode()
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self._client.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(self.name, f"{method} {path}: timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, f"{method} {path}: {type(exc).__name__}") from exc
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        detail = (
            f"{method} {path}: {response.status_code} {error.get('type', 'no error object')}"
            f"/{error.get('code')}: {error.get('message', '')}"
        )
        status = response.status_code
        # 409: another request with this key is still running (Stripe's SDKs retry it), and
        # Stripe-Should-Retry: true is Stripe saying so outright.
        if (
            status >= 500
            or status in (409, 429)
            or response.headers.get("stripe-should-retry") == "true"
            or response.is_success
        ):
            raise ProviderUnavailable(self.name, detail)
        raise ProviderRejected(self.name, detail)
