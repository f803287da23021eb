"""``pago-admin``: run as an operator would (a subprocess with the stack's environment)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.admin.cli import main
from pago.api.settings import ApiSettings
from pago.common.enums import ChainFamily
from pago.devstack.postgres import Database
from tests.support.api import account_xpub, running_app, solana_pubkeys

URL = "/v1/checkout/sessions"


async def admin(
    env: dict[str, str], *args: str, stdin: str | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``script`` uses the installed ``pago-admin`` console script."""
    command = (
        [str(Path(sys.executable).parent / "pago-admin")]
        if script
        else [sys.executable, "-m", "pago.api.admin.cli"]
    )
    return await asyncio.to_thread(
        subprocess.run,
        [*command, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def refused(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pago-admin: error: "), result.stderr
    assert fragment in lines[0], lines[0]


class TestSubprocess:
    async def test_a_merchant_and_a_test_key_that_works_until_revoked(
        self, server_env: dict[str, str], settings: ApiSettings, db: AsyncEngine, redis: Redis
    ) -> None:
        merchant_id = ok(
            await admin(server_env, "merchant", "create", "--name", "Dev Shop", script=True)
        )
        assert merchant_id.startswith("mch_")
        assert "\n" not in merchant_id
        created = await admin(
            server_env, "key", "create", merchant_id, "--mode", "test", "--label", "dev"
        )
        key = ok(created)
        assert key.startswith("sk_test_")
        assert len(key) == 56
        assert "shown only once" in created.stderr
        async with running_app(settings) as (_, client):
            headers = {"Authorization": f"Bearer {key}"}
            assert (await client.get(URL, headers=headers)).status_code == 200
            keys = json.loads(ok(await admin(server_env, "--json", "key", "list", merchant_id)))
            assert [(k["mode"], k["label"], k["revoked_at"]) for k in keys] == [
                ("test", "dev", None)
            ]
            assert keys[0]["key_hint"] == f"{key[:8]}…{key[-4:]}"
            assert key not in json.dumps(keys)
            assert (
                ok(await admin(server_env, "key", "revoke", keys[0]["id"]))
                == f"{keys[0]['id']} revoked"
            )
            assert (await client.get(URL, headers=headers)).status_code == 401


class TestInProcess:
    """The rest of the commands through ``main`` (the same code path minus interpreter start)."""

    @pytest.fixture(autouse=True)
    def env(self, monkeypatch: pytest.MonkeyPatch, database: Database, db: AsyncEngine) -> None:
        monkeypatch.setenv("DATABASE_URL", database.url)
        monkeypatch.setenv("PAGO_ENV", "test")

    def run(
        self, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
    ) -> tuple[int, str, str]:
        code = 0
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            try:
                main(list(argv))
            except SystemExit as exc:
                code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out.strip(), err

    def ok(self, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> str:
        code, out, err = self.run(capsys, *argv, stdin=stdin)
        assert code == 0, err
        return out

    def refused(self, capsys: pytest.CaptureFixture[str], fragment: str, *argv: str) -> None:
        code, out, err = self.run(capsys, *argv)
        assert (code, out) == (1, "")
        assert err.startswith("pago-admin: error: "), err
        assert err.count("\n") == 1, err
        assert fragment in err, err

    def test_fees_and_expiry(self, capsys: pytest.CaptureFixture[str]) -> None:
        merchant = self.ok(
            capsys, "merchant", "create", "--name", "Shop", "--id", "mch_shop",
            "--fee-rate", "0.01", "--expiry-minutes", "15",
        )  # fmt: skip
        assert merchant == "mch_shop"
        self.ok(
            capsys, "merchant", "update", merchant, "--fee-rate", "default",
            "--fee-floor", "2.5", "--expiry-minutes", "60", "--logo-url", "https://s.example/l.png",
        )  # fmt: skip
        listed = json.loads(self.ok(capsys, "--json", "merchant", "list"))
        assert [(m["id"], m["fee_rate"], m["fee_floor"], m["expiry_minutes"]) for m in listed] == [
            ("mch_shop", "0.005 (default)", "2.5", 60)
        ]
        assert listed[0]["logo_url"] == "https://s.example/l.png"
        table = self.ok(capsys, "merchant", "list").splitlines()
        assert table[0].split() == [
            "ID",
            "NAME",
            "FEE_RATE",
            "FEE_FLOOR",
            "EXPIRY_MINUTES",
            "ORDER_GUARD",
            "CREATED_AT",
        ]
        self.refused(
            capsys,
            "fee rate '1.5' must be in [0, 1)",
            "merchant",
            "update",
            merchant,
            "--fee-rate",
            "1.5",
        )
        self.refused(capsys, "nothing to change", "merchant", "update", merchant)
        self.refused(
            capsys, "already exists", "merchant", "create", "--name", "x", "--id", "mch_shop"
        )
        again = ("merchant", "create", "--name", "x", "--id", "mch_shop", "--exist-ok")
        assert self.ok(capsys, *again) == "mch_shop"  # re-runnable seeding

    def test_duplicate_order_guard_is_on_by_default_and_toggles(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        on = self.ok(capsys, "merchant", "create", "--name", "Guarded")
        off = self.ok(
            capsys, "merchant", "create", "--name", "Unguarded", "--no-duplicate-order-guard"
        )

        def guards() -> dict[str, str]:
            listed = json.loads(self.ok(capsys, "--json", "merchant", "list"))
            return {m["id"]: m["order_guard"] for m in listed}

        assert guards() == {on: "on", off: "off"}
        updated = json.loads(
            self.ok(capsys, "--json", "merchant", "update", on, "--no-duplicate-order-guard")
        )
        assert updated["order_guard"] == "off"
        self.ok(capsys, "merchant", "update", off, "--duplicate-order-guard")
        assert guards() == {on: "off", off: "on"}

    def test_sub_merchants(self, capsys: pytest.CaptureFixture[str]) -> None:
        merchant = self.ok(capsys, "merchant", "create", "--name", "Market")
        assert self.ok(
            capsys, "sub-merchant", "create", merchant, "--code", "eu-1", "--name", "EU"
        ).startswith("sub_")
        self.refused(
            capsys, "already has a sub-merchant 'eu-1'",
            "sub-merchant", "create", merchant, "--code", "eu-1", "--name", "x",
        )  # fmt: skip
        sub_again = ("sub-merchant", "create", merchant, "--code", "eu-1", "--name", "x")
        assert self.ok(capsys, *sub_again, "--exist-ok").startswith("sub_")
        self.refused(
            capsys,
            "sub-merchant code",
            "sub-merchant",
            "create",
            merchant,
            "--code",
            "bad code",
            "--name",
            "x",
        )
        assert (
            self.ok(capsys, "sub-merchant", "deactivate", merchant, "eu-1") == "eu-1: active=False"
        )
        subs = json.loads(self.ok(capsys, "--json", "sub-merchant", "list", merchant))
        assert [(s["code"], s["name"], s["active"]) for s in subs] == [("eu-1", "EU", False)]
        self.refused(
            capsys, "has no sub-merchant 'eu-9'", "sub-merchant", "activate", merchant, "eu-9"
        )

    def test_xpubs(self, capsys: pytest.CaptureFixture[str]) -> None:
        merchant = self.ok(capsys, "merchant", "create", "--name", "Keys")
        xpub = account_xpub(ChainFamily.TRON, 5)
        register = ("xpub", "register", merchant, "--family", "tron", "--mode", "live")
        first = self.ok(capsys, *register, xpub)
        assert first.startswith("xpub_")
        assert self.ok(capsys, *register, xpub) == first  # the same xpub again: a no-op
        self.refused(capsys, "pass --replace", *register, account_xpub(ChainFamily.TRON, 6))
        self.refused(capsys, "not a valid extended public key", *register, "--replace", "xpub-nope")
        assert self.ok(capsys, *register, "--replace", xpub) != first
        listed = json.loads(self.ok(capsys, "--json", "xpub", "list", merchant))
        assert [(x["family"], x["mode"], x["retired_at"] is None) for x in listed] == [
            ("tron", "live", False),
            ("tron", "live", True),
        ]
        other = self.ok(capsys, "merchant", "create", "--name", "Copycat")
        self.refused(
            capsys, "registered to another merchant",
            "xpub", "register", other, "--family", "tron", "--mode", "live", xpub,
        )  # fmt: skip

    def test_pools(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        merchant = self.ok(capsys, "merchant", "create", "--name", "Pools")
        pool = solana_pubkeys(4)
        listing = tmp_path / "pool.txt"
        listing.write_text(f"# treasury export\n{pool[0]}\n\n{pool[1]}  # cold\n{pool[2]}\n")
        imported = ("pool", "import", merchant, "--family", "solana", "--mode", "test")
        assert self.ok(capsys, *imported, str(listing)) == "imported 3 addresses (0 already known)"
        again = json.loads(
            self.ok(capsys, "--json", *imported, "-", stdin=f"{pool[0]}\n{pool[3]}\n")
        )
        assert again == {"added": 1, "skipped": 1}
        listing.write_text(f"{pool[0]}\n0xnot-solana\n")
        self.refused(capsys, "line 2", *imported, str(listing))
        self.refused(capsys, "cannot read", *imported, str(tmp_path / "missing.txt"))
        self.refused(capsys, "no addresses", *imported, "-")
        status = json.loads(self.ok(capsys, "--json", "pool", "status", merchant))
        assert status == [{"family": "solana", "mode": "test", "total": 4, "never_used": 4}]


class TestErrors:
    """Bad input, in-process (``main``) where a subprocess would only add start-up time."""

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    @pytest.fixture
    def env(self, monkeypatch: pytest.MonkeyPatch, database: Database) -> None:
        monkeypatch.setenv("DATABASE_URL", database.url)
        monkeypatch.setenv("PAGO_ENV", "test")

    def test_unknown_merchant(self, env: None, capsys: pytest.CaptureFixture[str]) -> None:
        for argv in (
            ("key", "create", "mch_nope", "--mode", "live"),
            ("sub-merchant", "list", "mch_nope"),
            ("pool", "status", "mch_nope"),
        ):
            code, _, err = self.run(capsys, *argv)
            assert (code, err) == (1, "pago-admin: error: no merchant 'mch_nope'\n")

    def test_unknown_key(self, env: None, capsys: pytest.CaptureFixture[str]) -> None:
        assert self.run(capsys, "key", "revoke", "key_nope")[:3:2] == (
            1,
            "pago-admin: error: no API key 'key_nope'\n",
        )

    @pytest.mark.parametrize(
        ("argv", "fragment"),
        [
            (("merchant", "create", "--name", " "), "name must be 1 to 200 characters"),
            (
                ("merchant", "create", "--name", "x", "--expiry-minutes", "0"),
                "expiry minutes must be 1 to",
            ),
            (("merchant", "create", "--name", "x", "--fee-floor", "-1"), "fee floor '-1'"),
            (("merchant", "create", "--name", "x", "--fee-rate", "abc"), "not a decimal number"),
            (
                ("merchant", "create", "--name", "x", "--logo-url", "javascript:alert(1)"),
                "logo URL",
            ),
            (("merchant", "create", "--name", "x", "--id", "a b"), "a merchant id is"),
        ],
    )
    def test_invalid_values(
        self, env: None, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
    ) -> None:
        code, out, err = self.run(capsys, *argv)
        assert code == 1
        assert out == ""
        assert err.startswith("pago-admin: error: ")
        assert fragment in err
        assert err.count("\n") == 1

    def test_usage_errors_exit_2(self, env: None, capsys: pytest.CaptureFixture[str]) -> None:
        for argv in (
            (),
            ("key",),
            ("xpub", "register", "m", "--family", "solana", "--mode", "test", "x"),
        ):
            assert self.run(capsys, *argv)[0] == 2

    def test_missing_database_url_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.delenv("PAGO_DATABASE_URL", raising=False)
        code, _, err = self.run(capsys, "merchant", "list")
        assert (code, err) == (2, "pago-admin: missing required setting DATABASE_URL\n")

    def test_unreachable_database_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
        code, _, err = self.run(capsys, "merchant", "list")
        assert code == 1
        assert err.startswith("pago-admin: error: database error")
        assert err.count("\n") == 1
