"""Request and response bodies of the card sessions API (``/api/v1/sessions``), in the seed's
camelCase.

Money in a request is a JSON number (as the seed sends it: ``"total": 140.76``) or a decimal
string (``"140.76"``), read exactly: the endpoint parses the raw body with
:func:`pago.api.cards.parsing.load_json` (``parse_float=Decimal``), so a value never passes
through ``float``. It must be representable in the currency's minor units (ISO 4217 exponent:
JPY 0, AUD 2, KWD 3): ``140.760`` is fine for AUD, ``140.761`` is not. Responses show money as
decimal strings with exactly ``exponent`` digits (``"140.76"``, JPY ``"1500"``) — a JSON number
would be read back as a float by most clients.

Unknown fields are ignored (forward compatibility, as in the rest of the API).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
)
from pydantic.alias_generators import to_camel

from pago.api.validation import HttpUrl, SafeStr, UpperCase
from pago.common.enums import CardProvider, CardSessionStatus

MAX_AMOUNT_DIGITS = 18
"""Significant digits a money value may have (a BIGINT of minor units holds 18 safely)."""
MAX_ITEMS = 100
MAX_ADDITIONAL_KEYS = 50
MAX_ADDITIONAL_KEY_LENGTH = 40
MAX_ADDITIONAL_VALUE_LENGTH = 500
_EMAIL = re.compile(r"[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+")
_LOCALE = re.compile(r"[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,3}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL_STRING = re.compile(r"\d{1,18}(\.\d{1,18})?")


def _money(value: object) -> object:
    """A JSON number (``int`` or ``Decimal`` from the exact parse) or a decimal string; never a
    bool, never a float (the parser gives none; a float reaching here is a bug, refused)."""
    if isinstance(value, bool | float):
        raise ValueError("must be a number (or a decimal string)")
    if isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):
            raise ValueError("must be a non-negative decimal like 140.76")
        return Decimal(value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value
    raise ValueError("must be a number (or a decimal string)")


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    if len(value.normalize().as_tuple().digits) > MAX_AMOUNT_DIGITS or value >= Decimal(10) ** 15:
        raise ValueError("is too large")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_money),
    AfterValidator(_non_negative),
    Field(
        json_schema_extra={"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
        examples=[140.76],
    ),
]
"""Exact non-negative money in major units; checked against the exponent by the service."""


def _pattern(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


Text255 = Annotated[SafeStr, Field(min_length=1, max_length=255)]
OptText255 = Annotated[SafeStr, Field(max_length=255)]
Country = Annotated[
    StrictStr,
    UpperCase,
    _pattern(_COUNTRY, "an ISO 3166-1 alpha-2 country code like AU"),
    Field(min_length=2, max_length=2, examples=["AU"]),
]


class _Body(BaseModel):
    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class AmountIn(_Body):
    total: Money = Field(description="What the payer pays, shipping and tax included (> 0).")
    shipping: Money = Decimal(0)
    tax: Money = Decimal(0)


class OrderItemIn(_Body):
    name: Text255
    sku: OptText255 | None = None
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    unit_price: Money


class AddressIn(_Body):
    line1: Text255
    line2: OptText255 | None = None
    city: Text255
    state: OptText255 | None = None
    postal_code: Annotated[SafeStr, Field(min_length=1, max_length=32)]
    country: Country


class CustomerIn(_Body):
    first_name: Text255
    last_name: Text255
    email: Annotated[
        SafeStr,
        Field(min_length=3, max_length=254, examples=["jane.smith@example.com"]),
        _pattern(_EMAIL, "an email address"),
    ]
    phone: Annotated[SafeStr, Field(max_length=32)] | None = None
    billing_address: AddressIn
    shipping_address: AddressIn | None = None


class ShippingIn(_Body):
    type: Annotated[SafeStr, Field(max_length=64)] | None = None
    method: Annotated[SafeStr, Field(max_length=64)] | None = None


class RedirectUrlsIn(_Body):
    success: HttpUrl
    failure: HttpUrl


def _additional(value: object) -> object:
    """A flat map of short keys to strings or numbers (kept as exact decimal strings)."""
    if not isinstance(value, dict):
        raise ValueError("must be an object of strings or numbers")
    if len(value) > MAX_ADDITIONAL_KEYS:
        raise ValueError(f"may hold at most {MAX_ADDITIONAL_KEYS} keys")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_ADDITIONAL_KEY_LENGTH:
            raise ValueError(f"keys must be 1 to {MAX_ADDITIONAL_KEY_LENGTH} characters")
        if isinstance(item, bool):
            raise ValueError("values must be strings or numbers")
        if isinstance(item, int | Decimal) and not isinstance(item, bool):
            if isinstance(item, Decimal) and not item.is_finite():
                raise ValueError("values must be finite numbers")
            item = str(item)
        if not isinstance(item, str) or len(item) > MAX_ADDITIONAL_VALUE_LENGTH:
            raise ValueError(
                f"values must be strings (or numbers) of at most {MAX_ADDITIONAL_VALUE_LENGTH}"
                " characters"
            )
        out[key] = item
    return out


AdditionalInformation = Annotated[
    dict[Annotated[SafeStr, Field(max_length=MAX_ADDITIONAL_KEY_LENGTH)], SafeStr],
    BeforeValidator(_additional),
    Field(
        description="Free key/values (≤ 50 keys of ≤ 40 characters; values strings or numbers "
        "of ≤ 500 characters), kept with the order; numbers are kept as exact decimal strings.",
        examples=[{"campaignId": "summer-sale-2024"}],
    ),
]


class CreateCardSessionRequest(_Body):
    """``POST /api/v1/sessions``: the seed's body.

    Consistency: with ``orderItems``, Σ ``unitPrice`` × ``quantity`` + ``shipping`` + ``tax``
    must equal ``total`` exactly (the seed's example: 119 + 9.95 + 11.81 = 140.76); without
    items, ``shipping`` + ``tax`` must not exceed ``total``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "orderReference": "ORD-2024-001",
                    "paymentMethod": "card",
                    "currency": "AUD",
                    "amount": {"total": 140.76, "shipping": 9.95, "tax": 11.81},
                    "orderItems": [
                        {"name": "Wireless Headphones", "sku": "WH-100", "quantity": 1,
                         "unitPrice": 119}
                    ],
                    "customer": {
                        "firstName": "Jane",
                        "lastName": "Smith",
                        "email": "jane.smith@example.com",
                        "billingAddress": {
                            "line1": "123 Collins Street",
                            "city": "Melbourne",
                            "postalCode": "3000",
                            "country": "AU",
                        },
                    },
                    "redirectUrls": {
                        "success": "https://merchant.example.com/checkout/success",
                        "failure": "https://merchant.example.com/checkout/failure",
                    },
                }
            ]
        },
    )  # fmt: skip

    order_reference: Text255
    payment_method: Literal["card"]
    currency: Annotated[
        StrictStr,
        UpperCase,
        _pattern(_CURRENCY, "an ISO 4217 alphabetic code like AUD"),
        Field(min_length=3, max_length=3, examples=["AUD"]),
    ]
    locale: (
        Annotated[
            SafeStr,
            Field(max_length=35, examples=["en_AU"]),
            _pattern(_LOCALE, "a locale like en_AU"),
        ]
        | None
    ) = None
    amount: AmountIn
    order_items: Annotated[list[OrderItemIn], Field(max_length=MAX_ITEMS)] | None = None
    customer: CustomerIn
    shipping: ShippingIn | None = None
    additional_information: AdditionalInformation | None = None
    redirect_urls: RedirectUrlsIn


# --- responses ------------------------------------------------------------------------------

Score = Annotated[
    Decimal,
    # A JSON number as in the seed (92.5): a one-decimal value's shortest float repr is exact.
    PlainSerializer(float, return_type=float, when_used="json"),
    Field(description="0–100, one decimal.", examples=[92.5]),
]


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class RoutingSummary(_Out):
    selected_provider: CardProvider
    score: Score


class CreatedCardSession(_Out):
    """The seed's 201 body, exactly these fields."""

    session_id: str = Field(examples=["e4b8c1a2-b088-4e79-99ad-2c3e0fa3f1b9"])
    checkout_url: str
    status: Literal["PENDING"]
    routing: RoutingSummary
    expires_at: datetime
    created_at: datetime


class AmountOut(_Out):
    currency: str
    exponent: int
    total: str = Field(description="Decimal string with `exponent` digits.", examples=["140.76"])
    shipping: str
    tax: str


class ComponentOut(_Out):
    name: str
    value: str = Field(description="0–1 as a decimal string.")
    weight: str
    detail: str


class CandidateOut(_Out):
    provider: CardProvider
    eligible: bool
    score: Score
    components: list[ComponentOut]
    reason: str | None


class RoutingOut(_Out):
    selected_provider: CardProvider | None
    score: Score | None
    components: list[ComponentOut]
    candidates: list[CandidateOut]
    rejected: list[CandidateOut]
    rule: str | None


class AttemptOut(_Out):
    seq: int
    provider: CardProvider
    status: str
    reference: str | None
    error: str | None
    latency_ms: int | None
    created_at: datetime


class CardSessionOut(_Out):
    """``GET /api/v1/sessions/{sessionId}``."""

    session_id: str
    order_reference: str
    status: CardSessionStatus
    amount: AmountOut
    checkout_url: str | None
    routing: RoutingOut
    attempts: list[AttemptOut]
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
