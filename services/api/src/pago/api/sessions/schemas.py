"""Request and response bodies of the Checkout Sessions endpoints.

The session object itself is ``pago.common.events.SessionSnapshot``: the API response and the
``session.*`` events share one model, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pago.api.pricing.currencies import FIAT_MINOR_UNITS
from pago.api.validation import HttpUrl, SafeStr, UpperCase
from pago.common.enums import Network, Token
from pago.common.events import SessionSnapshot

PRICING_CURRENCIES = (*(t.value for t in Token), *FIAT_MINOR_UNITS)


def _pricing_currency(value: str) -> str:
    if value not in PRICING_CURRENCIES:
        raise ValueError(f"unsupported currency {value[:12]!r}; use USDT, USDC or a fiat ISO code")
    return value


class CreateSessionRequest(BaseModel):
    """``POST /v1/checkout/sessions``. Unknown fields are ignored (forward compatibility)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "pricing_amount": "10.50",
                    "pricing_currency": "USD",
                    "currency": "USDT",
                    "network": "TRON",
                    "success_url": "https://shop.example/thanks",
                    "cancel_url": "https://shop.example/cart",
                    "client_reference_id": "order_1234",
                }
            ]
        },
    )

    pricing_amount: Annotated[
        SafeStr,
        Field(
            min_length=1,
            max_length=32,
            description="The price as a decimal string: at most 2 decimals (none for JPY, KRW "
            "and VND). Priced in USDT/USDC it must lie between 1.00 and 10,000,000.00; a fiat "
            "price must convert to at least 1 token.",
            examples=["10.50"],
        ),
    ]
    pricing_currency: Annotated[
        str,
        UpperCase,
        AfterValidator(_pricing_currency),
        Field(
            description="USDT or USDC (must equal `currency`), or a fiat ISO 4217 code that is "
            "converted at the current rate. Any letter case.",
            json_schema_extra={"enum": list(PRICING_CURRENCIES)},
        ),
    ]
    currency: Annotated[
        Token, UpperCase, Field(description="The token the customer pays in. Any letter case.")
    ]
    network: Annotated[
        Network,
        UpperCase,
        Field(description="The chain the customer pays on. Any letter case in, upper case out."),
    ]
    success_url: HttpUrl | None = Field(
        default=None, description="Where the hosted page sends the customer after payment."
    )
    cancel_url: HttpUrl | None = Field(
        default=None, description="Where the hosted page sends a customer who gives up."
    )
    client_reference_id: Annotated[SafeStr, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Your own reference (an order id); searchable."
    )


class ListMeta(BaseModel):
    total: int = Field(description="Sessions matching the filters, over all pages.")
    page: int
    page_size: int
    total_pages: int


class SessionList(BaseModel):
    """``GET /v1/checkout/sessions``: newest first (``created_at`` desc, then ``id`` desc)."""

    data: list[SessionSnapshot]
    meta: ListMeta
