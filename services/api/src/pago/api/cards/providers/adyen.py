"""Adyen: Checkout API ``/sessions`` in hosted mode, and its Standard webhooks.

A thin httpx client of Adyen's wire format (Checkout API v71) with a configurable base URL:
``https://checkout-test.adyen.com`` (or the live ``…-checkout-live.adyenpayments.com/checkout``)
in production, ``<local provider server>/adyen`` in tests and ``make dev``.

- **Reference.** The Adyen ``reference`` is Pago's session id (the order reference travels as
  ``merchantOrderReference``), and ``metadata.pagoSessionId`` repeats it: every notification
  echoes ``merchantReference``, so it finds its session even before the attempt is stored.
- **Idempotency.** Adyen's ``Idempotency-Key`` holds at most 64 characters; Pago's may hold 255.
  The key sent is the SHA-256 hex digest of the one given — exactly 64 characters, the same for
  every retry of one attempt, different for different attempts (a collision would need a
  SHA-256 collision), and it does not pass the merchant's own key text on to a third party.
  Adyen returns the stored first response for a key and answers a duplicate still in flight
  with ``704`` and ``transient-error: true``, which counts as unavailable here (retry later).
- **Money.** ``amount.value`` is in Adyen's minor units, which follow ISO 4217 except for four
  currencies (``ADYEN_EXPONENTS``): converted exactly, refused when not representable.
- **Errors.** Timeouts, transport failures, 5xx, 429 and a transient 704 are
  ``ProviderUnavailable``; 401 and 403 too (this account's credentials or merchant account are
  wrong — another provider can take the order, and the breaker should see it); any other 4xx is
  ``ProviderRejected`` with Adyen's ``errorCode`` and ``message``.
- **Return URL.** Adyen has one ``returnUrl`` for every outcome (the result comes in
  ``sessionResult``, and for Pago in the webhook), so it is the order's ``success_url``.
- **Expiry.** Adyen has no call that closes a session: it lapses at ``expiresAt``, which is sent
  as Pago's own ``expires_at``, so ``expire`` does nothing.
- **Webhooks.** Standard webhooks carry a batch of ``NotificationRequestItem``; each carries a
  base64 HMAC-SHA256 (hex-decoded key) over
  ``pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success``
  in ``additionalData.hmacSignature``. One item that does not verify rejects the whole batch
  (Adyen retries it whole). Adyen expects ``[accepted]`` back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
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

API_VERSION = "v71"
MAX_IDEMPOTENCY_KEY = 64

ADYEN_EXPONENTS: Mapping[str, int] = {"CLP": 2, "CVE": 0, "IDR": 0, "ISK": 2}
"""Where Adyen's minor units differ from ISO 4217 (Adyen's "Currency codes" page: CLP 0 → 2,
CVE 2 → 0, IDR 2 → 0, ISK 0 → 2)."""

DEFAULT_CAPABILITIES = Capabilities(
    currencies=frozenset({"AUD", "CAD", "CHF", "EUR", "GBP", "JPY", "KWD", "NZD", "SGD", "USD"}),
    countries=None,
)

SESSION_OUTCOMES: Mapping[str, CardSessionStatus | None] = {
    "active": None,
    "paymentPending": None,
    "completed": CardSessionStatus.COMPLETED,
    "refused": CardSessionStatus.FAILED,
    "canceled": CardSessionStatus.CANCELLED,
    "expired": CardSessionStatus.EXPIRED,
}
"""``SessionResultResponse.status`` → Pago."""

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


def adyen_idempotency_key(key: str) -> str:
    """Adyen's ``Idempotency-Key`` (≤ 64 characters) for Pago's ``key`` (≤ 255)."""
    return hashlib.sha256(key.encode()).hexdigest()


def to_adyen_minor(amount: int, currency: str, exponent: int) -> int:
    """``amount`` (ISO 4217 minor units, ``exponent`` digits) in Adyen's minor units."""
    shift = ADYEN_EXPONENTS.get(currency, exponent) - exponent
    if shift >= 0:
        scale: int = 10**shift
        return amount * scale
    factor: int = 10**-shift
    if amount % factor:
        raise ProviderRejected(
            CardProvider.ADYEN, f"{currency} {amount} has digits Adyen's minor unit cannot carry"
        )
    return amount // factor


def signing_payload(item: Mapping[str, Any]) -> str:
    amount = item.get("amount")
    amount = amount if isinstance(amount, Mapping) else {}
    values = {**item, "value": amount.get("value"), "currency": amount.get("currency")}
    return ":".join("" if values.get(name) is None else str(values[name]) for name in SIGNED_FIELDS)


def notification_outcome(event_code: str, success: bool) -> CardSessionStatus | None:
    """What a Standard webhook event means for the Pago session (``None``: nothing)."""
    if event_code == "AUTHORISATION":
        return CardSessionStatus.COMPLETED if success else CardSessionStatus.FAILED
    if not success:
        return None  # a cancellation or closure that failed leaves the payment as it was
    if event_code == "CANCELLATION":
        return CardSessionStatus.CANCELLED
    if event_code in ("OFFER_CLOSED", "EXPIRE"):
        return CardSessionStatus.EXPIRED
    return None


def _loads(raw: bytes) -> Any:
    return json.loads(raw, parse_float=Decimal)


def _address(address: Address) -> dict[str, str]:
    result = {
        "street": address.line1,
        "houseNumberOrName": address.line2 or "",
        "city": address.city,
        "postalCode": address.postal_code,
        "country": address.country,
    }
    if address.state:
        result["stateOrProvince"] = address.state
    return result


class AdyenAdapter:
    """One Adyen merchant account."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        merchant_account: str,
        hmac_key: str,
        capabilities: Capabilities = DEFAULT_CAPABILITIES,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._merchant_account = merchant_account
        self._hmac_key = binascii.unhexlify(hmac_key)
        self._capabilities = capabilities
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/{API_VERSION}",
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    @property
    def name(self) -> CardProvider:
        return CardProvider.ADYEN

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def session_request(self, order: CardOrder) -> dict[str, Any]:
        """The ``POST /sessions`` body for ``order``."""

        def minor(amount: int) -> int:
            return to_adyen_minor(amount, order.currency, order.exponent)

        lines: list[dict[str, Any]] = [
            {
                "id": item.sku or f"item-{number}",
                "description": item.name,
                "quantity": item.quantity,
                "amountIncludingTax": minor(item.unit_price),
            }
            for number, item in enumerate(order.items, start=1)
        ]
        # Shipping and tax as lines of their own, so that the lines add up to amount.value.
        for line_id, description, amount in (
            ("shipping", "Shipping", order.shipping),
            ("tax", "Tax", order.tax),
        ):
            if amount:
                lines.append(
                    {"id": line_id, "description": description, "quantity": 1,
                     "amountIncludingTax": minor(amount)}
                )  # fmt: skip
        body: dict[str, Any] = {
            "merchantAccount": self._merchant_account,
            "amount": {"currency": order.currency, "value": minor(order.total)},
            "reference": order.session_id,
            "merchantOrderReference": order.order_reference,
            "returnUrl": order.success_url,
            "mode": "hosted",
            "expiresAt": order.expires_at.isoformat(timespec="seconds"),
            "countryCode": order.billing_address.country,
            "shopperEmail": order.customer_email,
            "shopperName": {
                "firstName": order.customer_first_name,
                "lastName": order.customer_last_name,
            },
            "billingAddress": _address(order.billing_address),
            "lineItems": lines,
            "metadata": {"pagoSessionId": order.session_id},
        }
        if order.locale:
            body["shopperLocale"] = order.locale
        if order.customer_phone:
            body["telephoneNumber"] = order.customer_phone
        if order.shipping_address is not None:
            body["deliveryAddress"] = _address(order.shipping_address)
        return body

    async def create_checkout(self, order: CardOrder, *, idempotency_key: str) -> ProviderCheckout:
        body = self.session_request(order)
        headers = {"Idempotency-Key": adyen_idempotency_key(idempotency_key)}
        data = await self._call("POST", "/sessions", body=body, headers=headers)
        try:
            return ProviderCheckout(
                provider=CardProvider.ADYEN,
                reference=str(data["id"]),
                checkout_url=str(data["url"]),
                expires_at=datetime.fromisoformat(str(data["expiresAt"])),
                raw_status="active",
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProviderUnavailable(
                CardProvider.ADYEN, f"/sessions answered without {error}"
            ) from error

    async def retrieve(self, reference: str) -> ProviderStatus:
        data = await self._call("GET", f"/sessions/{reference}")
        raw = str(data.get("status"))
        if raw not in SESSION_OUTCOMES:
            raise ProviderUnavailable(CardProvider.ADYEN, f"unknown session status {raw!r}")
        return ProviderStatus(reference=reference, raw_status=raw, outcome=SESSION_OUTCOMES[raw])

    async def reconcile(self, reference: str) -> ProviderStatus:
        """No follow-up to make up for: the status as it is."""
        return await self.retrieve(reference)

    async def expire(self, reference: str) -> None:
        """Nothing to do: an Adyen session cannot be closed by a call; it lapses at its
        ``expiresAt`` (Pago's own ``expires_at``)."""

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ProviderNotification]:
        try:
            items = [
                entry["NotificationRequestItem"] for entry in _loads(body)["notificationItems"]
            ]
            if not items or not all(isinstance(item, dict) for item in items):
                raise ValueError("no notification items")
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidSignature(CardProvider.ADYEN, "not a Standard webhook") from error
        for item in items:
            if not self._verifies(item):
                raise InvalidSignature(CardProvider.ADYEN, "an item's hmacSignature is wrong")
        return [self._normalise(item) for item in items]

    def _verifies(self, item: Mapping[str, Any]) -> bool:
        additional = item.get("additionalData")
        given = additional.get("hmacSignature") if isinstance(additional, Mapping) else None
        if not isinstance(given, str) or not given:
            return False
        digest = hmac.new(self._hmac_key, signing_payload(item).encode(), hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64encode(digest), given.encode())

    @staticmethod
    def _normalise(item: Mapping[str, Any]) -> ProviderNotification:
        additional: Mapping[str, Any] = item.get("additionalData") or {}
        event_code = str(item.get("eventCode", ""))
        success = str(item.get("success", "")).lower() == "true"
        psp = str(item.get("pspReference", ""))
        reference = additional.get("checkoutSessionId") or item.get("originalReference") or psp
        occurred_at = None
        if item.get("eventDate"):
            try:
                occurred_at = datetime.fromisoformat(str(item["eventDate"]))
            except ValueError:
                occurred_at = None
        return ProviderNotification(
            provider=CardProvider.ADYEN,
            event_id=f"{psp}:{event_code}:{'true' if success else 'false'}",
            event_type=event_code,
            reference=str(reference),
            session_id=_session_id(item, additional),
            outcome=notification_outcome(event_code, success),
            occurred_at=occurred_at,
        )

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck(status_code=200, body=b"[accepted]", media_type="text/plain")

    async def on_notification(self, notification: ProviderNotification) -> None:
        """Nothing: sessions capture by the account's capture settings, not by a call here."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException as error:
            raise ProviderTimeout(CardProvider.ADYEN, f"{method} {path} timed out") from error
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                CardProvider.ADYEN, f"{method} {path} failed: {type(error).__name__}"
            ) from error
        try:
            data = _loads(response.content)
        except ValueError:
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        detail = f"{method} {path}: HTTP {response.status_code}"
        if isinstance(data, dict):
            detail += f" errorCode {data.get('errorCode')}: {data.get('message')}"
        status = response.status_code
        transient = response.headers.get("transient-error", "").lower() == "true"
        if response.is_success or status >= 500 or status in (401, 403, 429) or transient:
            raise ProviderUnavailable(CardProvider.ADYEN, detail)
        raise ProviderRejected(CardProvider.ADYEN, detail)


def _session_id(item: Mapping[str, Any], additional: Mapping[str, Any]) -> str | None:
    for candidate in (item.get("merchantReference"), additional.get("metadata.pagoSessionId")):
        try:
            return str(uuid.UUID(str(candidate)))
        except ValueError:
            continue
    return None
