"""GET /v1/checkout/sessions/{id} and GET /v1/checkout/sessions: scoping, filters, pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.db.schema import checkout_sessions, session_transactions
from pago.common.enums import Mode
from tests.support.api import Merchant, assert_error, crypto_body

URL = "/v1/checkout/sessions"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def new_session(
    client: httpx.AsyncClient,
    merchant: Merchant,
    mode: Mode = Mode.TEST,
    sub: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    response = await client.post(
        URL, json=crypto_body(**body), headers=merchant.headers(mode, sub=sub)
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def set_row(db: AsyncEngine, session_id: str, **values: Any) -> None:
    async with db.begin() as conn:
        await conn.execute(
            update(checkout_sessions).where(checkout_sessions.c.id == session_id).values(**values)
        )


async def add_transaction(
    db: AsyncEngine, session: dict[str, Any], tx_hash: str, amount: int
) -> None:
    """What the matcher writes when it sees a payment."""
    async with db.begin() as conn:
        await conn.execute(
            insert(session_transactions).values(
                session_id=session["id"],
                network=session["network"],
                tx_hash=tx_hash,
                log_index=0,
                token=session["currency"],
                contract=session["currency_contract"],
                amount=amount,
                decimals=6,
                from_address="TLsV52sRDL79HXGGm9yzwKibb6BeruhUzy",
                block_number=100,
                block_hash="00" * 32,
                status="Confirming",
                confirmations=3,
            )
        )


async def list_ids(
    client: httpx.AsyncClient, merchant: Merchant, params: Any = None, **headers: Any
) -> list[str]:
    response = await client.get(URL, params=params, headers=merchant.headers(**headers))
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["data"]]


class TestGet:
    async def test_returns_what_create_returned(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await new_session(client, merchant)
        response = await client.get(f"{URL}/{created['id']}", headers=merchant.headers())
        assert response.status_code == 200
        assert response.json() == created

    async def test_shows_transactions_the_matcher_recorded(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        created = await new_session(client, merchant)
        await add_transaction(db, created, "ab" * 32, 2_500_000)
        got = (await client.get(f"{URL}/{created['id']}", headers=merchant.headers())).json()
        assert len(got["transactions"]) == 1
        tx = got["transactions"][0]
        assert {k: tx[k] for k in ("tx_hash", "amount", "network", "status", "confirmations")} == {
            "tx_hash": "ab" * 32,
            "amount": "2.5",
            "network": "TRON",
            "status": "Confirming",
            "confirmations": 3,
        }
        assert tx["created_at"].endswith("Z")

    async def test_another_merchants_session_is_404(
        self, client: httpx.AsyncClient, merchant: Merchant, other_merchant: Merchant
    ) -> None:
        created = await new_session(client, other_merchant)
        response = await client.get(f"{URL}/{created['id']}", headers=merchant.headers())
        assert_error(response, 404, "resource_missing", param="id")

    async def test_the_other_modes_session_is_404(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        created = await new_session(client, merchant, Mode.TEST)
        response = await client.get(f"{URL}/{created['id']}", headers=merchant.headers(Mode.LIVE))
        assert_error(response, 404, "resource_missing")

    @pytest.mark.parametrize("session_id", ["cs_nope", "x" * 300, "a%00b", "%F0%9F%92%A9"])
    async def test_unknown_ids_are_404(
        self, app_client: httpx.AsyncClient, shared_merchant: Merchant, session_id: str
    ) -> None:
        assert_error(
            await app_client.get(f"{URL}/{session_id}", headers=shared_merchant.headers()),
            404,
            "resource_missing",
        )

    async def test_sub_merchant_sees_only_its_own(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        parent = await new_session(client, merchant)
        mine = await new_session(client, merchant, sub="shop-a")
        theirs = await new_session(client, merchant, sub="shop-b")
        headers = merchant.headers(sub="shop-a")
        assert (await client.get(f"{URL}/{mine['id']}", headers=headers)).status_code == 200
        for other in (parent, theirs):
            assert_error(
                await client.get(f"{URL}/{other['id']}", headers=headers), 404, "resource_missing"
            )
        # The parent sees its sub-merchants' sessions by id.
        assert (
            await client.get(f"{URL}/{theirs['id']}", headers=merchant.headers())
        ).status_code == 200


class TestList:
    async def test_newest_first_with_id_breaking_ties(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        sessions = [await new_session(client, merchant) for _ in range(4)]
        times = [
            T0,
            T0 + timedelta(seconds=5),
            T0 + timedelta(seconds=5),
            T0 + timedelta(seconds=9),
        ]
        for session, created_at in zip(sessions, times, strict=True):
            await set_row(db, session["id"], created_at=created_at)
        tied = sorted([sessions[1]["id"], sessions[2]["id"]], reverse=True)
        assert await list_ids(client, merchant) == [sessions[3]["id"], *tied, sessions[0]["id"]]

    async def test_pages_and_meta(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        ids: list[str] = []
        for i in range(5):
            session = await new_session(client, merchant)
            await set_row(db, session["id"], created_at=T0 + timedelta(minutes=i))
            ids.insert(0, session["id"])
        pages = []
        for page in (1, 2, 3, 4):
            response = await client.get(
                URL, params={"page": page, "page_size": 2}, headers=merchant.headers()
            )
            body = response.json()
            assert body["meta"] == {"total": 5, "page": page, "page_size": 2, "total_pages": 3}
            pages.append([s["id"] for s in body["data"]])
        assert pages == [ids[0:2], ids[2:4], ids[4:5], []]

    async def test_defaults_and_empty(self, client: httpx.AsyncClient, merchant: Merchant) -> None:
        body = (await client.get(URL, headers=merchant.headers())).json()
        assert body == {
            "data": [],
            "meta": {"total": 0, "page": 1, "page_size": 20, "total_pages": 0},
        }

    @pytest.mark.parametrize(
        ("params", "param"),
        [
            ({"page_size": 101}, "page_size"),
            ({"page_size": 0}, "page_size"),
            ({"page": 0}, "page"),
            ({"page": "x"}, "page"),
            ({"status": "Lost"}, "status.0"),
            ({"network": "FANTOM"}, "network.0"),
            ({"created_after": "yesterday"}, "created_after"),
            # Unix seconds up to 9999-12-31 (the document's bounds), never milliseconds.
            ({"created_before": "253402300800"}, "created_before"),
            ({"created_before": "-1"}, "created_before"),
            ({"include_sub_merchants": "maybe"}, "include_sub_merchants"),
        ],
    )
    async def test_bad_parameters(
        self,
        app_client: httpx.AsyncClient,
        shared_merchant: Merchant,
        params: dict[str, Any],
        param: str,
    ) -> None:
        response = await app_client.get(URL, params=params, headers=shared_merchant.headers())
        assert_error(response, 400, "parameter_invalid", param=param)

    async def test_status_filter_repeats_and_ignores_case(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        pending, paid, expired = [await new_session(client, merchant) for _ in range(3)]
        await set_row(db, paid["id"], status="Paid")
        await set_row(db, expired["id"], status="Expired")
        assert await list_ids(client, merchant, {"status": "paid"}) == [paid["id"]]
        got = await list_ids(client, merchant, [("status", "Pending"), ("status", "EXPIRED")])
        assert sorted(got) == sorted([pending["id"], expired["id"]])

    async def test_network_filter(self, client: httpx.AsyncClient, merchant: Merchant) -> None:
        tron = await new_session(client, merchant)
        bsc = await new_session(client, merchant, network="BSC")
        eth = await new_session(client, merchant, network="ETHEREUM")
        assert await list_ids(client, merchant, {"network": "bsc"}) == [bsc["id"]]
        got = await list_ids(client, merchant, [("network", "TRON"), ("network", "ETHEREUM")])
        assert sorted(got) == sorted([tron["id"], eth["id"]])

    async def test_created_window_is_exclusive(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        sessions = [await new_session(client, merchant) for _ in range(3)]
        for i, session in enumerate(sessions):
            await set_row(db, session["id"], created_at=T0 + timedelta(hours=i))
        params = {"created_after": T0.isoformat(), "created_before": "2026-01-01T02:00:00Z"}
        assert await list_ids(client, merchant, params) == [sessions[1]["id"]]
        unix = {"created_after": int((T0 + timedelta(minutes=30)).timestamp())}
        assert await list_ids(client, merchant, unix) == [sessions[2]["id"], sessions[1]["id"]]
        naive = {"created_before": "2026-01-01T00:30:00"}  # no offset: UTC
        assert await list_ids(client, merchant, naive) == [sessions[0]["id"]]
        # Seconds past 2e10 are still seconds (pydantic alone would read them as milliseconds,
        # i.e. 1970, and list nothing).
        far = {"created_before": "20000000001"}
        assert len(await list_ids(client, merchant, far)) == 3

    async def test_search_text_finds_exact_values(
        self, client: httpx.AsyncClient, merchant: Merchant, db: AsyncEngine
    ) -> None:
        a = await new_session(client, merchant, client_reference_id="order-77")
        b = await new_session(client, merchant, network="ETHEREUM", client_reference_id="order-78")
        c = await new_session(client, merchant, client_reference_id="order-79")
        await add_transaction(db, c, "cd" * 32, 1_000_000)
        cases = {
            a["id"]: a["id"],
            "order-78": b["id"],
            b["pay_address"]: b["id"],
            b["pay_address"].lower(): b["id"],
            a["pay_address"]: a["id"],
            "cd" * 32: c["id"],
        }
        for text, expected in cases.items():
            assert await list_ids(client, merchant, {"search_text": text}) == [expected], text
        assert await list_ids(client, merchant, {"search_text": "order-7"}) == []

    async def test_sub_merchant_sessions_need_include_sub_merchants(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        own = await new_session(client, merchant)
        sub_a = await new_session(client, merchant, sub="shop-a")
        sub_b = await new_session(client, merchant, sub="shop-b")
        assert await list_ids(client, merchant) == [own["id"]]
        got = await list_ids(client, merchant, {"include_sub_merchants": "true"})
        assert sorted(got) == sorted([own["id"], sub_a["id"], sub_b["id"]])
        assert await list_ids(client, merchant, {"sub_merchant_code": "shop-b"}) == [sub_b["id"]]
        meta = (
            await client.get(
                URL, params={"include_sub_merchants": "true"}, headers=merchant.headers()
            )
        ).json()["meta"]
        assert meta["total"] == 3

    async def test_acting_as_a_sub_merchant_lists_only_its_sessions(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        await new_session(client, merchant)
        sub_a = await new_session(client, merchant, sub="shop-a")
        await new_session(client, merchant, sub="shop-b")
        for params in (None, {"include_sub_merchants": "true"}, {"sub_merchant_code": "shop-a"}):
            assert await list_ids(client, merchant, params, sub="shop-a") == [sub_a["id"]]
        assert await list_ids(client, merchant, {"sub_merchant_code": "shop-b"}, sub="shop-a") == []

    async def test_unknown_sub_merchant_code_filter_is_400(
        self, client: httpx.AsyncClient, merchant: Merchant
    ) -> None:
        response = await client.get(
            URL, params={"sub_merchant_code": "nope"}, headers=merchant.headers()
        )
        assert_error(response, 400, "invalid_sub_merchant_code", param="sub_merchant_code")

    async def test_scoped_to_merchant_and_mode(
        self, client: httpx.AsyncClient, merchant: Merchant, other_merchant: Merchant
    ) -> None:
        test = await new_session(client, merchant)
        live = await new_session(client, merchant, Mode.LIVE)
        await new_session(client, other_merchant)
        assert await list_ids(client, merchant) == [test["id"]]
        assert await list_ids(client, merchant, mode=Mode.LIVE) == [live["id"]]
