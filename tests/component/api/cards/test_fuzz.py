"""Hypothesis: whatever the body and headers, POST /api/v1/sessions answers 201 or a 4xx
envelope — never a 5xx, never a float-rounded amount accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.component.api.cards.support import SEED_BODY, CardClient, CardStack, new_card_client
from tests.support.api import seed_merchant

URL = "/api/v1/sessions"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
money = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    json_values,
)
PATHS: list[tuple[str, ...]] = [
    ("orderReference",),
    ("paymentMethod",),
    ("currency",),
    ("locale",),
    ("amount",),
    ("amount", "total"),
    ("amount", "shipping"),
    ("amount", "tax"),
    ("orderItems",),
    ("customer",),
    ("customer", "email"),
    ("customer", "billingAddress"),
    ("customer", "billingAddress", "country"),
    ("redirectUrls", "success"),
    ("additionalInformation",),
]


@st.composite
def nearly_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The seed's body with one value replaced by a hostile one, sometimes one key dropped."""
    body: dict[str, Any] = json.loads(json.dumps(SEED_BODY))
    path = draw(st.sampled_from(PATHS))
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    if draw(st.booleans()):
        parent.pop(path[-1], None)
    else:
        strategy = money if path[0] == "amount" else st.one_of(json_values, st.text(max_size=80))
        parent[path[-1]] = draw(strategy)
    return body


bodies = st.one_of(nearly_valid(), nearly_valid(), json_values)
_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
# What HTTP/1.1 lets through as a header value (RFC 9110 field-value): visible ASCII, spaces
# and tabs inside, obs-text; the real server and client refuse anything else before Pago.
header_text = (
    st.text(
        alphabet=st.characters(codec="latin-1", exclude_categories=["Cc"], include_characters="\t"),
        max_size=300,
    )
    .map(lambda value: value.strip(" \t"))
    .filter(bool)
)


@pytest.fixture
async def fuzz_client(stack: CardStack, db: AsyncEngine) -> CardClient:
    return await new_card_client(stack, db, await seed_merchant(db, stack.settings))


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    idempotency_key=st.one_of(st.none(), st.text(_PRINTABLE, min_size=1, max_size=40), header_text),
    token=st.one_of(st.none(), st.none(), st.text(_PRINTABLE, max_size=60)),
)
async def test_create_answers_201_or_a_4xx_envelope(
    stack: CardStack, fuzz_client: CardClient, body: Any, idempotency_key: str | None,
    token: str | None,
) -> None:  # fmt: skip
    headers: list[tuple[bytes, bytes]] = [
        (b"Authorization", f"Bearer {token or fuzz_client.token}".encode()),
        (b"Content-Type", b"application/json"),
    ]
    if idempotency_key is not None:
        headers.append((b"Idempotency-Key", idempotency_key.encode("latin-1")))
    response = await stack.http.post(URL, content=json.dumps(body), headers=headers)
    assert response.status_code == 201 or 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    if response.status_code != 201:
        error = response.json()["error"]
        assert {"type", "code", "message", "param"} <= set(error)
