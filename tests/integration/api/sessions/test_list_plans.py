"""The list queries stay index scans on a large table (the plans, not a stopwatch).

Leaves its rows behind: every other test starts from ``db``, which empties the tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.sessions.repository import ListFilter, Scope, count_query, list_query
from tests.support.database import empty_database

MERCHANTS = 12
PER_MERCHANT = 5_000
"""60,000 sessions over 12 merchants: enough for the planner to choose what it would at 1M."""


@pytest.fixture(scope="module")
async def big_table(engine: AsyncEngine) -> AsyncEngine:
    """Built once for this module (the tests only read it); emptied first like ``db``."""
    db = engine
    await empty_database(db)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO merchants (id, name) "
                "SELECT 'm' || m, 'Merchant ' || m FROM generate_series(0, :n - 1) AS m"
            ),
            {"n": MERCHANTS},
        )
        await conn.execute(
            text(
                "INSERT INTO sub_merchants (id, merchant_id, code, name) "
                "SELECT 's' || m, 'm' || m, 'shop', 'Shop' FROM generate_series(0, :n - 1) AS m"
            ),
            {"n": MERCHANTS},
        )
        await conn.execute(
            text(
                """
                INSERT INTO checkout_sessions (
                    id, merchant_id, sub_merchant_id, mode, status, network, currency,
                    currency_contract, decimals, amount_expected, pay_address, client_reference_id,
                    pricing_currency, pricing_amount, exchange_rate, expires_at, created_at
                )
                SELECT
                    'cs_' || lpad(i::text, 24, '0'),
                    'm' || (i % :m),
                    CASE WHEN i % 10 = 0 THEN 's' || (i % :m) END,
                    CASE WHEN i % 4 = 0 THEN 'live' ELSE 'test' END,
                    (ARRAY['Pending', 'Paid', 'Expired', 'Underpaid', 'Overpaid'])[1 + i % 5],
                    (ARRAY['TRON', 'ETHEREUM', 'BSC', 'SOLANA'])[1 + i % 4],
                    'USDT', 'contract', 6, 10000000, 'addr' || i, 'order-' || i,
                    'USDT', '10', 1,
                    now() + interval '30 minutes',
                    now() - (i || ' seconds')::interval
                FROM generate_series(1, :total) AS i
                """
            ),
            {"m": MERCHANTS, "total": MERCHANTS * PER_MERCHANT},
        )
        await conn.execute(text("ANALYZE checkout_sessions"))
    return db


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(db: AsyncEngine, query: Select[Any]) -> list[dict[str, Any]]:
    compiled = query.compile(dialect=db.dialect, compile_kwargs={"literal_binds": True})
    async with db.connect() as conn:
        raw = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}"))).scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    return list(_nodes(document[0]["Plan"]))


def _scans(nodes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (n["Node Type"], n.get("Index Name", ""))
        for n in nodes
        if n.get("Relation Name") == "checkout_sessions"
    }


SCOPE = Scope(merchant_id="m3", mode="test", sub_merchant_id=None)


@pytest.mark.parametrize(
    ("name", "f"),
    [
        ("default", ListFilter(scope=SCOPE, parent_only=True)),
        ("with sub-merchants", ListFilter(scope=SCOPE, parent_only=False)),
        ("one sub-merchant", ListFilter(scope=Scope("m3", "test", "s3"), parent_only=True)),
        ("status", ListFilter(scope=SCOPE, parent_only=False, statuses=("Paid",))),
        (
            "search",
            ListFilter(scope=SCOPE, parent_only=False, search=("addr43", "order-43", "cs_x")),
        ),
    ],
)
async def test_no_sequential_scan_of_sessions(
    big_table: AsyncEngine, name: str, f: ListFilter
) -> None:
    for query in (list_query(f, limit=20, offset=0), count_query(f)):
        scans = _scans(await _plan(big_table, query))
        assert scans, name
        assert all(kind != "Seq Scan" for kind, _ in scans), (name, scans)


async def test_the_default_page_walks_the_merchants_own_index(big_table: AsyncEngine) -> None:
    f = ListFilter(scope=SCOPE, parent_only=True)
    nodes = await _plan(big_table, list_query(f, limit=20, offset=0))
    own = [n for n in nodes if n.get("Index Name") == "ix_sessions_list_own"]
    assert [n["Scan Direction"] for n in own] == ["Backward"]
    assert not any(n["Node Type"] == "Sort" for n in nodes)  # newest first straight off the index
