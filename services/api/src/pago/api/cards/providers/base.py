"""The one protocol every card provider adapter speaks (Stripe, Adyen, PayPal, …).

An adapter is a thin async HTTP client of the provider's *real* wire format with a configurable
base URL (the real API in production, the devstack's local provider server in tests and
``make dev``). It knows nothing about Pago's tables: the orchestrator hands it an order and the
provider's idempotency key, and gets back the hosted checkout to send the payer to.

Money crosses this boundary as ``int`` minor units with the currency's exponent
(``CardOrder.exponent``: JPY 0, AUD 2, KWD 3); each adapter converts to the provider's own
representation (Stripe and Adyen: minor-unit integers; PayPal: a decimal string) exactly.

Errors are classified, because routing depends on the class: ``ProviderUnavailable`` (a
timeout, a connection failure, a 5xx or a 429) lets the orchestrator fail over to the next
candidate; ``ProviderRejected`` (a 4xx the request itself caused) does not — another provider
would most likely refuse the same order, and the merchant must see why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pago.common.enums import CardProvider, CardSessionStatus


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider account can take: routing's eligibility component reads only this."""

    currencies: frozenset[str]
    """ISO 4217 alphabetic codes (upper case)."""
    countries: frozenset[str] | None
    """ISO 3166-1 alpha-2 codes of billing countries; ``None`` means any."""
    min_amount: Mapping[str, int] = field(default_factory=dict)
    """Per currency, the smallest ``total`` in minor units (absent: no minimum)."""
    max_amount: Mapping[str, int] = field(default_factory=dict)
    """Per currency, the largest ``total`` in minor units (absent: no maximum)."""


@dataclass(frozen=True, slots=True)
class Address:
    line1: str
    line2: str | None
    city: str
    state: str | None
    postal_code: str
    country: str
    """ISO 3166-1 alpha-2."""


@dataclass(frozen=True, slots=True)
class OrderItem:
    name: str
    sku: str | None
    quantity: int
    unit_price: int
    """Minor units."""


@dataclass(frozen=True, slots=True)
class CardOrder:
    """The order as validated by Pago, in the units every adapter starts from."""

    session_id: str
    """Pago's session UUID: adapters put it where the provider echoes it back in webhooks
    (Stripe ``client_reference_id`` and ``metadata``, Adyen ``reference``/``metadata``, PayPal
    ``custom_id``) so a notification finds its session even before the attempt is stored."""
    order_reference: str
    currency: str
    exponent: int
    """Digits after the decimal point in ``currency`` (ISO 4217 minor unit)."""
    total: int
    """Minor units; equals Σ items × quantity + shipping + tax (validated before routing)."""
    shipping: int
    tax: int
    items: Sequence[OrderItem]
    locale: str | None
    customer_email: str
    customer_first_name: str
    customer_last_name: str
    customer_phone: str | None
    billing_address: Address
    shipping_address: Address | None
    success_url: str
    failure_url: str
    expires_at: datetime
    """When Pago expires the session; adapters pass it where the provider accepts one."""


@dataclass(frozen=True, slots=True)
class ProviderCheckout:
    """A hosted checkout the provider created."""

    provider: CardProvider
    reference: str
    """The provider's id for it (Stripe ``cs_…``, Adyen session ``id``, PayPal order ``id``)."""
    checkout_url: str
    """Where the payer goes (Stripe ``url``, Adyen hosted ``url``, PayPal ``approve`` link)."""
    expires_at: datetime | None
    raw_status: str
    """The provider's own status word at creation (``open``, ``active``, ``CREATED``, …)."""


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A provider's answer to "what became of this checkout?"."""

    reference: str
    raw_status: str
    outcome: CardSessionStatus | None
    """The Pago status it implies; ``None`` while the payer has not finished."""


@dataclass(frozen=True, slots=True)
class ProviderNotification:
    """One verified provider webhook notification, normalised."""

    provider: CardProvider
    event_id: str
    """Unique per notification at the provider: the inbox's deduplication key."""
    event_type: str
    """The provider's name for it (``checkout.session.completed``, ``AUTHORISATION``, …)."""
    reference: str
    """The provider checkout it is about (``ProviderCheckout.reference``)."""
    session_id: str | None
    """Pago's session UUID when the notification echoes it (see ``CardOrder.session_id``)."""
    outcome: CardSessionStatus | None
    """The Pago status it implies; ``None`` for one that moves nothing (informational)."""
    occurred_at: datetime | None


@dataclass(frozen=True, slots=True)
class WebhookAck:
    """What the provider expects back from a webhook endpoint (Adyen wants ``[accepted]``)."""

    status_code: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


class ProviderError(Exception):
    """A provider call failed; ``detail`` is safe to log (no secrets, no card data)."""

    def __init__(self, provider: CardProvider, detail: str) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail


class ProviderUnavailable(ProviderError):
    """Timeout, connection failure, 5xx or 429: the next candidate may be tried."""


class ProviderTimeout(ProviderUnavailable):
    """No answer in time: the provider may still have created the checkout, so the attempt
    is a possible orphan (the sweeper replays its idempotency key and expires what it finds).
    Any other ``ProviderUnavailable`` (refused connection, 5xx, 429) created nothing."""


class ProviderRejected(ProviderError):
    """A 4xx caused by the request: failing over would not help."""


class InvalidSignature(ProviderError):
    """A webhook whose signature does not verify with the provider's scheme: answer 401/400
    and move nothing."""


class CardProviderAdapter(Protocol):
    """One provider account (one set of credentials, one base URL)."""

    @property
    def name(self) -> CardProvider: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create_checkout(self, order: CardOrder, *, idempotency_key: str) -> ProviderCheckout:
        """Create the hosted checkout, sending ``idempotency_key`` with the provider's own
        mechanism (Stripe ``Idempotency-Key``, Adyen ``Idempotency-Key`` ≤ 64 chars, PayPal
        ``PayPal-Request-Id``), so a retry after a timeout returns the same checkout.

        Raises ``ProviderUnavailable`` or ``ProviderRejected``."""
        ...

    async def retrieve(self, reference: str) -> ProviderStatus:
        """The checkout's current status at the provider."""
        ...

    async def expire(self, reference: str) -> None:
        """Make the checkout unpayable where the provider allows it (Stripe's expire; PayPal
        and Adyen let it lapse): used for an orphan a timed-out create may have left."""
        ...

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ProviderNotification]:
        """Verify ``body`` with the provider's real scheme (Stripe-Signature, Adyen HMAC,
        PayPal verification) and normalise it; raise ``InvalidSignature`` when it does not
        verify. ``headers`` keys are lower case."""
        ...

    def webhook_ack(self) -> WebhookAck:
        """The response the provider expects for a webhook it delivered."""
        ...

    async def on_notification(self, notification: ProviderNotification) -> None:
        """Provider-specific follow-up after a notification was stored (PayPal: capture an
        approved order). Idempotent; most providers do nothing."""
        ...

    async def reconcile(self, reference: str) -> ProviderStatus:
        """The checkout's status after the follow-up a notification would have triggered —
        for a checkout whose webhooks were lost or whose follow-up failed (PayPal: an
        ``APPROVED`` order is captured, and the capture's status answered). Idempotent; for the
        others it is ``retrieve``.

        Raises ``ProviderUnavailable`` or ``ProviderRejected``."""
        ...

    async def aclose(self) -> None: ...
