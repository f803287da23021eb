"""The local card-provider server for tests, with a webhook receiver behind it, and the seed's
order as an adapter sees it."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pago.api.cards.providers.base import Address, CardOrder, OrderItem
from pago.devstack.cardproviders.server import Builder, CardProviderServer
from tests.support.receiver import Receiver

WEBHOOK_PATH = "/api/v1/webhooks/{provider}"


@contextlib.asynccontextmanager
async def provider_server(
    providers: Mapping[str, Builder] | None = None,
) -> AsyncIterator[tuple[CardProviderServer, Receiver]]:
    """The server (default: every provider module present) sending its webhooks to a receiver
    that stands in for Pago's api (``/api/v1/webhooks/<provider>``)."""
    receiver = Receiver()
    await receiver.start()
    server = CardProviderServer(webhook_base_url=receiver.url(""), providers=providers)
    try:
        with server:
            yield server, receiver
    finally:
        await receiver.stop()


def seed_order(**changes: Any) -> CardOrder:
    """Seed 003's order: AUD 140.76 = 119.00 + 9.95 shipping + 11.81 tax."""
    address = Address(
        line1="123 Collins Street",
        line2="Level 5",
        city="Melbourne",
        state="VIC",
        postal_code="3000",
        country="AU",
    )
    order = CardOrder(
        session_id=str(uuid.uuid4()),
        order_reference="ORD-2024-001",
        currency="AUD",
        exponent=2,
        total=14076,
        shipping=995,
        tax=1181,
        items=[OrderItem(name="Wireless Headphones", sku="WH-100", quantity=1, unit_price=11900)],
        locale="en_AU",
        customer_email="jane.smith@example.com",
        customer_first_name="Jane",
        customer_last_name="Smith",
        customer_phone="+61412345678",
        billing_address=address,
        shipping_address=address,
        success_url="https://merchant.example.com/checkout/success",
        failure_url="https://merchant.example.com/checkout/failure",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    return dataclasses.replace(order, **changes)
