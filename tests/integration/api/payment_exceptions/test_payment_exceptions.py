"""``/v1/payment_exceptions``: list, retrieve and resolve, scoped to the caller's merchant and
mode; resolutions applied by the matcher's worker with the domain's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.payment_exceptions.service import PaymentExceptionService
from pago.api.settings import ApiSettings
from pago.common.db.schema import checkout_sessions, idempotency_records
from pago.common.enums import Mode, Network, SessionStatus, Token, TransferStage
from pago.common.events import SessionResolved
from pago.matcher.domain import AmlVerdict
from pago.matcher.service import TransferMatcher, sender
from tests.integration.api.payment_exceptions.support import Api, Worker
from tests.support.api import Merchant, assert_error, seed_merchant, services_replaced
from tests.support.matcher import (
    BASE_URL,
    USDT,
    SessionSpec,
    insert_session,
    outbox_events,
    transfer,
)

HOUR = timedelta(hours=1)


async def session_for(
    engine: AsyncEngine, merchant: Merchant, status: SessionStatus, **over: Any
) -> SessionSpec:
    expires = datetime.now(UTC) + (-HOUR if status is SessionStatus.EXPIRED else HOUR)
    async with engine.begin() as conn:
        return await insert_session(
            conn, SessionSpec(merchant_id=merchant.id, status=status, expires_at=expires, **over)
        )


async def pay(engine: AsyncEngine, session: SessionSpec, *transfers: Any) -> None:
    async with engine.begin() as conn:
        await TransferMatcher(checkout_base_url=BASE_URL).apply(
            conn,
            list(transfers),
            {sender(t): AmlVerdict.clear() for t in transfers},
            datetime.now(UTC),
        )


async def late_payment(
    engine: AsyncEngine, merchant: Merchant, amount: int = 10 * USDT
) -> SessionSpec:
    session = await session_for(engine, merchant, SessionStatus.EXPIRED)
    await pay(engine, session, transfer(session, amount))
    return session


async def only_case(api: Api, merchant: Merchant, session: SessionSpec) -> dict[str, Any]:
    response = await api.client.get(
        "/v1/payment_exceptions", params={"session_id": session.id}, headers=merchant.headers()
    )
    [case] = response.json()["data"]
    return dict(case)


class TestList:
    async def test_filters_and_pages_newest_first(
        self, db: AsyncEngine, api: Api, merchant: Merchant
    ) -> None:
        late = await late_payment(db, merchant)
        paid = await session_for(db, merchant, SessionStatus.PENDING, network=Network.BASE)
        await pay(db, paid, transfer(paid, 10 * USDT), transfer(paid, 2 * USDT))
        wrong = await session_for(db, merchant, SessionStatus.PENDING)
        await pay(db, wrong, transfer(wrong, 5 * USDT, token=Token.USDC))

        async def listed(**params: Any) -> dict[str, Any]:
            response = await api.client.get(
                "/v1/payment_exceptions", params=params, headers=merchant.headers()
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        everything = await listed()
        assert everything["meta"] == {"total": 3, "page": 1, "page_size": 20, "total_pages": 1}
        assert [c["kind"] for c in everything["data"]] == [
            "wrong_token",
            "overpayment",
            "late_payment",
        ]
        assert [c["session_id"] for c in (await listed(kind="late_payment"))["data"]] == [late.id]
        assert len((await listed(kind=["late_payment", "overpayment"]))["data"]) == 2
        assert [c["network"] for c in (await listed(network="base"))["data"]] == ["BASE"]
        assert (await listed(status="open"))["meta"]["total"] == 3
        assert (await listed(status="accepted"))["meta"]["total"] == 0
        later = (datetime.now(UTC) + HOUR).isoformat()
        assert (await listed(created_after=later))["meta"]["total"] == 0
        assert (await listed(created_before=later))["meta"]["total"] == 3
        second_page = await listed(page_size=2, page=2)
        assert second_page["meta"]["total_pages"] == 2
        assert [c["kind"] for c in second_page["data"]] == ["late_payment"]

    async def test_another_merchant_or_the_other_mode_sees_nothing(
        self, db: AsyncEngine, api: Api, merchant: Merchant, settings: ApiSettings
    ) -> None:
        await late_payment(db, merchant)
        other = await seed_merchant(db, settings, name="Other", account=1, solana_pool=0)

        for headers in (other.headers(), merchant.headers(Mode.LIVE)):
            response = await api.client.get("/v1/payment_exceptions", headers=headers)
            assert response.json()["meta"]["total"] == 0

    async def test_an_unknown_kind_is_a_400(self, api: Api, merchant: Merchant) -> None:
        response = await api.client.get(
            "/v1/payment_exceptions", params={"kind": "nope"}, headers=merchant.headers()
        )
        assert_error(response, 400, "parameter_invalid", param="kind.0")

    async def test_it_needs_a_key(self, api: Api) -> None:
        assert_error(await api.client.get("/v1/payment_exceptions"), 401, "authentication_failed")


class TestRetrieve:
    async def test_the_exception_object(
        self, db: AsyncEngine, api: Api, merchant: Merchant
    ) -> None:
        session = await late_payment(db, merchant, 10 * USDT + 500_000)
        case = await only_case(api, merchant, session)

        response = await api.client.get(
            f"/v1/payment_exceptions/{case['id']}", headers=merchant.headers()
        )

        assert response.status_code == 200
        body = response.json()
        assert body == case
        assert {k: body[k] for k in ("object", "livemode", "kind", "status", "amount")} == {
            "object": "payment_exception",
            "livemode": False,
            "kind": "late_payment",
            "status": "open",
            "amount": "10.5",
        }
        assert (body["currency"], body["network"], body["requested_action"]) == (
            "USDT",
            "ETHEREUM",
            None,
        )

    async def test_someone_elses_or_an_unknown_id_is_a_404(
        self, db: AsyncEngine, api: Api, merchant: Merchant, settings: ApiSettings
    ) -> None:
        case = await only_case(api, merchant, await late_payment(db, merchant))
        other = await seed_merchant(db, settings, name="Other", account=1, solana_pool=0)

        for path, headers in (
            (f"/v1/payment_exceptions/{case['id']}", other.headers()),
            (f"/v1/payment_exceptions/{case['id']}", merchant.headers(Mode.LIVE)),
            ("/v1/payment_exceptions/pex_nope", merchant.headers()),
        ):
            assert_error(await api.client.get(path, headers=headers), 404, "resource_missing")


class TestResolve:
    async def test_accepting_a_late_full_payment_makes_the_session_paid(
        self,
        db: AsyncEngine,
        api: Api,
        merchant: Merchant,
        resolution_worker: Worker,
    ) -> None:
        session = await late_payment(db, merchant)
        case = await only_case(api, merchant, session)

        async with resolution_worker():
            response = await api.client.post(
                f"/v1/payment_exceptions/{case['id']}/resolve",
                json={"action": "accept", "note": "customer emailed"},
                headers=merchant.headers(),
            )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["resolution_note"], body["requested_action"]) == (
            "accepted",
            "customer emailed",
            None,
        )
        assert body["resolved_at"] is not None
        shown = (
            await api.client.get(f"/v1/checkout/sessions/{session.id}", headers=merchant.headers())
        ).json()
        assert (shown["status"], shown["amount_received"], shown["net_amount"]) == (
            "Paid",
            "10",
            "9",
        )
        resolved = [
            e for e in await outbox_events(db, session.id) if isinstance(e, SessionResolved)
        ]
        assert [e.exception_id for e in resolved] == [case["id"]]

    async def test_a_closed_case_takes_the_same_action_again_but_no_other(
        self, db: AsyncEngine, api: Api, merchant: Merchant, resolution_worker: Worker
    ) -> None:
        case = await only_case(api, merchant, await late_payment(db, merchant))
        path = f"/v1/payment_exceptions/{case['id']}/resolve"

        async with resolution_worker():
            first = await api.client.post(
                path, json={"action": "dismiss"}, headers=merchant.headers()
            )
        again = await api.client.post(path, json={"action": "dismiss"}, headers=merchant.headers())
        other = await api.client.post(path, json={"action": "accept"}, headers=merchant.headers())

        assert (first.status_code, first.json()["status"]) == (200, "dismissed")
        assert (again.status_code, again.json()["status"]) == (200, "dismissed")
        assert_error(other, 409, "exception_already_resolved")

    async def test_without_the_matcher_the_request_is_accepted_for_later(
        self, db: AsyncEngine, api: Api, merchant: Merchant
    ) -> None:
        case = await only_case(api, merchant, await late_payment(db, merchant))
        path = f"/v1/payment_exceptions/{case['id']}/resolve"

        with services_replaced(
            api.app, payment_exceptions=PaymentExceptionService(resolve_wait=0.1)
        ):
            pending = await api.client.post(
                path, json={"action": "refund_requested"}, headers=merchant.headers()
            )
            conflicting = await api.client.post(
                path, json={"action": "accept"}, headers=merchant.headers()
            )

        assert pending.status_code == 202, pending.text
        assert (pending.json()["status"], pending.json()["requested_action"]) == (
            "open",
            "refund_requested",
        )
        assert_error(conflicting, 409, "resolution_in_progress")

    async def test_an_action_that_does_not_fit_is_refused_with_the_reason(
        self, db: AsyncEngine, api: Api, merchant: Merchant, resolution_worker: Worker
    ) -> None:
        session = await session_for(db, merchant, SessionStatus.EXPIRED)
        await pay(db, session, transfer(session, 10 * USDT, tag="x" + session.id))
        await pay(
            db,
            session,
            transfer(session, 10 * USDT, tag="x" + session.id, stage=TransferStage.REVERTED),
        )
        case = await only_case(api, merchant, session)

        async with resolution_worker():
            response = await api.client.post(
                f"/v1/payment_exceptions/{case['id']}/resolve",
                json={"action": "accept"},
                headers=merchant.headers(),
            )

        error = assert_error(response, 409, "resolution_rejected", param="action")
        assert "Reverted" in error["message"]
        after = await only_case(api, merchant, session)
        assert (after["status"], after["requested_action"]) == ("open", None)
        assert "Reverted" in after["resolution_error"]

    async def test_a_bad_body_is_a_400(self, db: AsyncEngine, api: Api, merchant: Merchant) -> None:
        case = await only_case(api, merchant, await late_payment(db, merchant))
        path = f"/v1/payment_exceptions/{case['id']}/resolve"

        for body, param in (
            ({"action": "refund"}, "action"),
            ({}, "action"),
            ({"action": "accept", "note": "x" * 1001}, "note"),
        ):
            response = await api.client.post(path, json=body, headers=merchant.headers())
            assert_error(
                response, 400, "parameter_invalid" if body else "parameter_missing", param=param
            )


class TestResolveIdempotency:
    async def test_a_keyed_resolution_replays_from_postgres_after_redis_lost_it(
        self,
        db: AsyncEngine,
        api: Api,
        merchant: Merchant,
        resolution_worker: Worker,
        redis: Redis,
    ) -> None:
        # Resolve commits in its own short transactions (idempotent by the case's state), so
        # its record is written right after the answer; a retry still replays it.
        case = await only_case(api, merchant, await late_payment(db, merchant))
        path = f"/v1/payment_exceptions/{case['id']}/resolve"
        headers = merchant.headers(idempotency_key="resolve-1")
        async with resolution_worker():
            first = await api.client.post(path, json={"action": "dismiss"}, headers=headers)
        assert first.status_code == 200, first.text
        await redis.flushdb()
        again = await api.client.post(path, json={"action": "dismiss"}, headers=headers)
        assert again.headers["Idempotency-Replayed"] == "true"
        assert again.content == first.content
        other = await api.client.post(path, json={"action": "accept"}, headers=headers)
        assert_error(other, 409, "idempotency_conflict")
        async with db.connect() as conn:
            keys = (await conn.execute(select(idempotency_records.c.key))).scalars().all()
        assert keys == ["resolve-1"]


async def sub_merchant_late_payment(
    engine: AsyncEngine, merchant: Merchant, sub_merchant_code: str | None
) -> SessionSpec:
    """A late payment to a session that was created for one of the merchant's sub-merchants."""
    session = await session_for(engine, merchant, SessionStatus.EXPIRED)
    if sub_merchant_code is not None:
        async with engine.begin() as conn:
            await conn.execute(
                update(checkout_sessions)
                .where(checkout_sessions.c.id == session.id)
                .values(sub_merchant_id=merchant.sub_merchants[sub_merchant_code])
            )
    await pay(engine, session, transfer(session, 10 * USDT))
    return session


class TestSubMerchantScope:
    """A key with ``X-Sub-Merchant-Code`` acts as that sub-merchant: it lists, retrieves and
    resolves only the exceptions of that sub-merchant's sessions; another merchant (even with
    a sub-merchant of the same code) never sees them."""

    async def test_list_retrieve_and_resolve_are_scoped(
        self,
        db: AsyncEngine,
        api: Api,
        merchant: Merchant,
        settings: ApiSettings,
        resolution_worker: Worker,
    ) -> None:
        in_a = await sub_merchant_late_payment(db, merchant, "shop-a")
        in_b = await sub_merchant_late_payment(db, merchant, "shop-b")
        own = await sub_merchant_late_payment(db, merchant, None)
        case_a, case_b, case_own = [
            await only_case(api, merchant, session) for session in (in_a, in_b, own)
        ]
        other = await seed_merchant(
            db, settings, name="Other", account=1, solana_pool=0, sub_merchants=("shop-a",)
        )

        async def listed(headers: dict[str, str]) -> set[str]:
            response = await api.client.get("/v1/payment_exceptions", headers=headers)
            assert response.status_code == 200, response.text
            return {c["session_id"] for c in response.json()["data"]}

        assert await listed(merchant.headers(sub="shop-a")) == {in_a.id}
        assert await listed(merchant.headers(sub="shop-b")) == {in_b.id}
        assert await listed(merchant.headers()) == {in_a.id, in_b.id, own.id}
        assert await listed(other.headers(sub="shop-a")) == set()
        assert await listed(other.headers()) == set()
        # A filter cannot reach around the scope.
        response = await api.client.get(
            "/v1/payment_exceptions",
            params={"session_id": in_b.id},
            headers=merchant.headers(sub="shop-a"),
        )
        assert response.json()["meta"]["total"] == 0

        def path(case: dict[str, Any]) -> str:
            return f"/v1/payment_exceptions/{case['id']}"

        shown = await api.client.get(path(case_a), headers=merchant.headers(sub="shop-a"))
        assert (shown.status_code, shown.json()["id"]) == (200, case_a["id"])
        for case, headers in (
            (case_b, merchant.headers(sub="shop-a")),
            (case_own, merchant.headers(sub="shop-a")),
            (case_a, merchant.headers(sub="shop-b")),
            (case_a, other.headers(sub="shop-a")),
            (case_a, other.headers()),
        ):
            assert_error(await api.client.get(path(case), headers=headers), 404, "resource_missing")
            refused = await api.client.post(
                path(case) + "/resolve", json={"action": "dismiss"}, headers=headers
            )
            assert_error(refused, 404, "resource_missing")

        async with resolution_worker():
            resolved = await api.client.post(
                path(case_a) + "/resolve",
                json={"action": "dismiss"},
                headers=merchant.headers(sub="shop-a"),
            )
        assert (resolved.status_code, resolved.json()["status"]) == (200, "dismissed")
        # Nothing else moved: the refused resolutions above left the other cases open.
        for case in (case_b, case_own):
            after = (await api.client.get(path(case), headers=merchant.headers())).json()
            assert (after["status"], after["requested_action"]) == ("open", None)
