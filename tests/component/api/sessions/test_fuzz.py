"""Hypothesis: whatever the body and headers, create answers 201 or a 4xx envelope, never 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.pricing.currencies import FIAT_MINOR_UNITS
from pago.api.settings import ApiSettings, default_static_rates
from pago.common.enums import Mode, Network
from tests.support.api import Merchant, running_app, seed_merchant

URL = "/v1/checkout/sessions"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
amounts = st.one_of(
    st.from_regex(r"[0-9]{1,9}(\.[0-9]{1,3})?", fullmatch=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(max_size=40),
    json_values,
)
currencies = ["USDT", "USDC", *FIAT_MINOR_UNITS]
codes = st.sampled_from([*currencies, *(c.lower() for c in currencies), "XYZ", ""])
networks = st.sampled_from([*Network, *(n.lower() for n in Network), "FANTOM"])
urls = st.one_of(
    st.sampled_from(["https://shop.example/ok", "http://localhost/x", "ftp://x", "https://", ""]),
    st.text(max_size=60),
    json_values,
)
fields: dict[str, st.SearchStrategy[Any]] = {
    "pricing_amount": amounts,
    "pricing_currency": st.one_of(codes, json_values),
    "currency": st.one_of(st.sampled_from(["USDT", "USDC", "usdc", "DAI"]), json_values),
    "network": st.one_of(networks, json_values),
    "success_url": urls,
    "cancel_url": urls,
    "client_reference_id": st.one_of(st.text(max_size=300), json_values),
}
valid_fields: dict[str, st.SearchStrategy[Any]] = {
    "pricing_amount": st.decimals(min_value=1, max_value=10_000_000, places=2).map(str),
    "pricing_currency": st.just("USDT"),
    "currency": st.just("USDT"),
    "network": st.sampled_from(["TRON", "ETHEREUM", "bsc", "Arbitrum"]),
}


@st.composite
def nearly_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one field replaced by a hostile value, sometimes one field dropped."""
    optional = {k: v for k, v in fields.items() if k not in valid_fields}
    body: dict[str, Any] = draw(st.fixed_dictionaries(valid_fields, optional=optional))
    field = draw(st.sampled_from(sorted(fields)))
    body[field] = draw(fields[field])
    if draw(st.booleans()):
        del body[draw(st.sampled_from(sorted(body)))]
    return body


bodies = st.one_of(
    st.fixed_dictionaries(valid_fields),
    nearly_valid(),
    st.fixed_dictionaries({}, optional=fields),
    st.fixed_dictionaries(
        {
            k: v
            for k, v in fields.items()
            if k in ("pricing_amount", "pricing_currency", "currency", "network")
        }
    ),
    json_values,
)
_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n"),
    max_size=300,
)


@pytest.fixture
async def fuzz_client(
    settings: ApiSettings, db: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, Merchant]]:
    full = settings.model_copy(update={"static_rates": default_static_rates()})
    merchant = await seed_merchant(db, full, solana_pool=150)
    async with running_app(full) as (_, client):
        yield client, merchant


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    # None repeated: most requests carry no such header, as in real traffic.
    idempotency_key=st.one_of(
        st.none(), st.none(), st.text(_PRINTABLE, min_size=1, max_size=40), header_text
    ),
    sub_merchant=st.one_of(
        st.none(), st.none(), st.sampled_from(["shop-a", "shop-b", "nope"]), header_text
    ),
    live=st.booleans(),
)
async def test_create_never_fails_with_a_5xx(
    fuzz_client: tuple[httpx.AsyncClient, Merchant],
    body: Any,
    idempotency_key: str | None,
    sub_merchant: str | None,
    live: bool,
) -> None:
    client, merchant = fuzz_client
    headers: list[tuple[bytes, bytes]] = [
        (b"Authorization", f"Bearer {merchant.keys[Mode.LIVE if live else Mode.TEST]}".encode()),
        (b"Content-Type", b"application/json"),
    ]
    if idempotency_key is not None:
        headers.append((b"Idempotency-Key", idempotency_key.encode("latin-1")))
    if sub_merchant is not None:
        headers.append((b"X-Sub-Merchant-Code", sub_merchant.encode("latin-1")))
    response = await client.post(URL, content=json.dumps(body), headers=headers)
    assert response.status_code == 201 or 400 <= response.status_code < 500, response.text
    if response.status_code != 201:
        error = response.json()["error"]
        assert set(error) == {"type", "code", "message", "param", "doc_url"}
        assert error["type"] in (
            "invalid_request_error",
            "authentication_error",
            "idempotency_error",
        )
