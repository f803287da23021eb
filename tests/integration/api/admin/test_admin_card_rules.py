"""``pago-admin card-rules``: run as an operator would; what it writes is what the api reads."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.cards import repository as cards
from pago.api.cards.routing.model import RoutingRules
from pago.api.cards.routing.rules import parse_rules
from pago.common.enums import CardProvider, Mode
from tests.integration.api.admin.test_admin_cli import admin, ok, refused


async def api_reads(db: AsyncEngine, merchant: str, mode: Mode) -> RoutingRules | None:
    """What the card service routes the merchant's next session by."""
    async with db.connect() as conn:
        row = await cards.routing_rules(conn, merchant, mode)
    return None if row is None else parse_rules(pin=row.pin, exclude=row.exclude, split=row.split)


class TestCardRules:
    async def test_set_show_replace_and_clear(
        self, server_env: dict[str, str], db: AsyncEngine
    ) -> None:
        merchant = ok(await admin(server_env, "merchant", "create", "--name", "Card Shop"))
        rules = ("card-rules", "set", "--merchant", merchant)

        table = ok(
            await admin(
                server_env, *rules, "--mode", "live", "--split", "stripe=70",
                "--split", "paypal=30", "--exclude", "adyen", script=True,
            )
        )  # fmt: skip

        header, row = table.splitlines()
        assert header.split() == ["MERCHANT_ID", "MODE", "PIN", "EXCLUDE", "SPLIT", "UPDATED_AT"]
        assert row.split()[:5] == [merchant, "live", "-", "adyen", "paypal=30"]
        assert await api_reads(db, merchant, Mode.LIVE) == RoutingRules(
            exclude=frozenset({CardProvider.ADYEN}),
            split={CardProvider.STRIPE: 70, CardProvider.PAYPAL: 30},
        )
        assert await api_reads(db, merchant, Mode.TEST) is None

        ok(await admin(server_env, *rules, "--mode", "test", "--pin", "adyen"))
        ok(await admin(server_env, *rules, "--mode", "live", "--pin", "paypal"))  # replaces all
        shown = json.loads(
            ok(await admin(server_env, "--json", "card-rules", "show", "--merchant", merchant))
        )
        assert [(r["mode"], r["pin"], r["exclude"], r["split"]) for r in shown] == [
            ("live", "paypal", [], None),
            ("test", "adyen", [], None),
        ]
        only = ok(
            await admin(server_env, "card-rules", "show", "--merchant", merchant, "--mode", "test")
        )
        assert len(only.splitlines()) == 2
        assert await api_reads(db, merchant, Mode.LIVE) == RoutingRules(pin=CardProvider.PAYPAL)

        clear = ("card-rules", "clear", "--merchant", merchant, "--mode", "live")
        assert ok(await admin(server_env, *clear)) == f"{merchant} (live): rules cleared"
        assert ok(await admin(server_env, *clear)) == f"{merchant} (live): had no rules"
        assert await api_reads(db, merchant, Mode.LIVE) is None
        assert await api_reads(db, merchant, Mode.TEST) == RoutingRules(pin=CardProvider.ADYEN)
        ok(await admin(server_env, "card-rules", "clear", "--merchant", merchant, "--mode", "test"))
        show = ("card-rules", "show", "--merchant", merchant)
        assert ok(await admin(server_env, *show)) == "(none)"

    async def test_refusals_leave_the_rules_as_they_were(
        self, server_env: dict[str, str], db: AsyncEngine
    ) -> None:
        merchant = ok(await admin(server_env, "merchant", "create", "--name", "Card Shop"))
        rules = ("card-rules", "set", "--merchant", merchant, "--mode", "test")
        ok(await admin(server_env, *rules, "--exclude", "stripe"))

        refused(
            await admin(server_env, *rules, "--split", "stripe=70", "--split", "adyen=20"),
            "split shares must sum to 100, not 90",
        )
        refused(
            await admin(server_env, *rules, "--pin", "adyen", "--exclude", "adyen"),
            "adyen cannot be both pinned and excluded",
        )
        refused(await admin(server_env, *rules, "--split", "stripe:100"), "PROVIDER=PERCENT")
        refused(await admin(server_env, *rules, "--split", "klarna=100"), "not a card provider")
        refused(await admin(server_env, *rules), "no rule given")
        refused(
            await admin(
                server_env, "card-rules", "set", "--merchant", "mch_nope", "--mode", "test",
                "--pin", "stripe",
            ),
            "mch_nope",
        )  # fmt: skip
        usage = await admin(server_env, *rules, "--pin", "klarna")
        assert usage.returncode == 2
        assert "invalid choice: 'klarna'" in usage.stderr

        assert await api_reads(db, merchant, Mode.TEST) == RoutingRules(
            exclude=frozenset({CardProvider.STRIPE})
        )
