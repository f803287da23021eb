"""``pago-admin``: administer merchants, API keys and deposit addresses from a shell.

Exit status: 0 done; 1 refused (the one line on stderr says why); 2 bad usage or settings.
Create commands print only the new id (``key create`` the key itself, shown once), so they
compose in scripts; ``--json`` prints every result as JSON instead.

Examples::

    M=$(pago-admin merchant create --name "Dev Shop")
    KEY=$(pago-admin key create "$M" --mode test)
    pago-admin xpub register "$M" --family evm --mode test xpub6D…
    pago-admin pool import "$M" --family solana --mode test addresses.txt
    pago-admin pool depth            # every pool: available, cooling, held, leased
    pago-admin card-rules set --merchant "$M" --mode live --split stripe=70 --split paypal=30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.admin import service
from pago.api.admin.service import AdminError
from pago.api.admin.settings import AdminSettings
from pago.common.db.engine import create_engine
from pago.common.enums import CardProvider, ChainFamily, Mode
from pago.common.settings import describe_validation_error, exit_with

PROG = "pago-admin"

Handler = Callable[[AsyncConnection, argparse.Namespace, AdminSettings], Awaitable[Any]]


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mode | ChainFamily):
        return value.value
    return value


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


# --- handlers -------------------------------------------------------------------------------


async def _merchant_create(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    merchant_id = await service.create_merchant(
        conn,
        name=a.name,
        logo_url=a.logo_url,
        fee_rate=service.parse_fee_rate(a.fee_rate) if a.fee_rate is not None else None,
        fee_floor=service.parse_fee_floor(a.fee_floor) if a.fee_floor is not None else None,
        expiry_minutes=a.expiry_minutes,
        merchant_id=a.id,
        exist_ok=a.exist_ok,
        duplicate_order_guard=a.duplicate_order_guard,
    )
    return {"id": merchant_id} if a.json else merchant_id


def _plain(value: Decimal) -> str:
    """``2.500000000000000000`` (a NUMERIC column) as ``2.5``."""
    return f"{value.normalize():f}"


def _effective(rows: list[Any], s: AdminSettings) -> list[dict[str, Any]]:
    return [
        {
            "id": m.id,
            "name": m.name,
            "logo_url": m.logo_url,
            "fee_rate": _plain(m.fee_rate)
            if m.fee_rate is not None
            else f"{_plain(s.default_fee_rate)} (default)",
            "fee_floor": _plain(m.fee_floor)
            if m.fee_floor is not None
            else f"{_plain(s.default_fee_floor)} (default)",
            "expiry_minutes": m.session_expiry_minutes,
            "order_guard": "on" if m.duplicate_order_guard else "off",
            "created_at": m.created_at,
        }
        for m in rows
    ]


_MERCHANT_COLUMNS = (
    "id",
    "name",
    "fee_rate",
    "fee_floor",
    "expiry_minutes",
    "order_guard",
    "created_at",
)


async def _merchant_list(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = _effective(await service.list_merchants(conn), s)
    return rows if a.json else _table(rows, _MERCHANT_COLUMNS)


def _default_or(parse: Callable[[str], Decimal]) -> Callable[[str | None], Any]:
    def convert(text: str | None) -> Any:
        if text is None:
            return service._UNSET
        return None if text == "default" else parse(text)

    return convert


async def _merchant_update(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    row = await service.update_merchant(
        conn,
        a.merchant,
        name=a.name,
        logo_url=service._UNSET if a.logo_url is None else (a.logo_url or None),
        fee_rate=_default_or(service.parse_fee_rate)(a.fee_rate),
        fee_floor=_default_or(service.parse_fee_floor)(a.fee_floor),
        expiry_minutes=a.expiry_minutes,
        duplicate_order_guard=a.duplicate_order_guard,
    )
    rows = _effective([row], s)
    return rows[0] if a.json else _table(rows, _MERCHANT_COLUMNS)


async def _sub_create(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    sub_id = await service.create_sub_merchant(
        conn, a.merchant, code=a.code, name=a.name, exist_ok=a.exist_ok
    )
    return {"id": sub_id, "code": a.code} if a.json else sub_id


async def _sub_list(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.list_sub_merchants(conn, a.merchant)
    return rows if a.json else _table(rows, ("id", "code", "name", "active", "created_at"))


def _sub_active(active: bool) -> Handler:
    async def handler(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
        await service.set_sub_merchant_active(conn, a.merchant, a.code, active=active)
        return {"code": a.code, "active": active} if a.json else f"{a.code}: active={active}"

    return handler


async def _key_create(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    new = await service.create_api_key(
        conn, a.merchant, mode=Mode(a.mode), pepper=s.pepper, label=a.label
    )
    print(f"{PROG}: key {new.id} — store it now, it is shown only once", file=sys.stderr)
    return new if a.json else new.key


async def _key_list(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.list_api_keys(conn, a.merchant)
    columns = ("id", "mode", "key_hint", "label", "created_at", "last_used_at", "revoked_at")
    return rows if a.json else _table(rows, columns)


async def _key_revoke(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    revoked_at = await service.revoke_api_key(conn, a.key_id)
    return {"id": a.key_id, "revoked_at": revoked_at} if a.json else f"{a.key_id} revoked"


async def _xpub_register(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    xpub_id = await service.register_xpub(
        conn,
        a.merchant,
        family=ChainFamily(a.family),
        mode=Mode(a.mode),
        xpub=a.xpub,
        replace=a.replace,
    )
    return {"id": xpub_id} if a.json else xpub_id


async def _xpub_list(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.list_xpubs(conn, a.merchant)
    return rows if a.json else _table(rows, ("id", "family", "mode", "xpub", "retired_at"))


async def _pool_import(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    if a.file == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = (await asyncio.to_thread(Path(a.file).read_text)).splitlines()
        except OSError as exc:
            raise AdminError(f"cannot read {a.file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AdminError(f"{a.file} is not a text file") from None
    result = await service.import_pool(
        conn, a.merchant, family=ChainFamily(a.family), mode=Mode(a.mode), lines=lines
    )
    if a.json:
        return result
    return f"imported {result.added} addresses ({result.skipped} already known)"


async def _pool_status(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.pool_status(conn, a.merchant)
    return rows if a.json else _table(rows, ("family", "mode", "total", "never_used"))


_DEPTH_COLUMNS = (
    "merchant_id",
    "family",
    "mode",
    "available",
    "cooling",
    "held",
    "leased",
    "total",
    "state",
)


async def _pool_depth(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.pool_depth(
        conn, a.merchant, cooldown=s.address_cooldown, low_water=s.address_pool_low_water
    )
    if a.json:
        return rows
    for row in rows:
        row["state"] = "xpub in use" if row["derived"] else "LOW" if row["low"] else "ok"
    footer = (
        f"cool-down {s.address_cooldown_days:g} days; low-water mark "
        f"{s.address_pool_low_water} available"
    )
    return _table(rows, _DEPTH_COLUMNS) + "\n" + footer


async def _oauth_create(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    new = await service.create_oauth_client(
        conn, a.merchant, mode=Mode(a.mode), pepper=s.pepper, scopes=a.scope, label=a.label
    )
    print(
        f"{PROG}: client {new.client_id} — store its secret now, it is shown only once",
        file=sys.stderr,
    )
    return new if a.json else f"{new.client_id}\n{new.client_secret}"


async def _oauth_create_external(
    conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings
) -> Any:
    new = await service.create_external_oauth_client(
        conn,
        a.merchant,
        mode=Mode(a.mode),
        issuer=a.issuer,
        subject=a.subject,
        scopes=a.scope,
        label=a.label,
    )
    if a.issuer not in s.oauth_trusted_issuers:
        print(
            f"{PROG}: warning: {a.issuer} is not in PAGO_OAUTH_TRUSTED_ISSUERS here; the api "
            "accepts its tokens only once it is there",
            file=sys.stderr,
        )
    return new if a.json else new.client_id


async def _oauth_list(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rows = await service.list_oauth_clients(conn, a.merchant)
    columns = (
        "id",
        "merchant_id",
        "mode",
        "scopes",
        "secret_hint",
        "external_issuer",
        "external_subject",
        "created_at",
        "revoked_at",
    )
    return rows if a.json else _table(rows, columns)


async def _oauth_revoke(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    revoked_at = await service.revoke_oauth_client(conn, a.client_id)
    return {"id": a.client_id, "revoked_at": revoked_at} if a.json else f"{a.client_id} revoked"


async def _oauth_key_rotate(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    kid = await service.rotate_oauth_key(conn, s)
    return {"kid": kid} if a.json else kid


def _rules_rows(rules: Sequence[service.CardRules]) -> list[dict[str, Any]]:
    return [
        {
            "merchant_id": r.merchant_id,
            "mode": r.mode.value,
            "pin": r.pin,
            "exclude": " ".join(r.exclude) or None,
            "split": " ".join(f"{p}={share}" for p, share in r.split.items()) if r.split else None,
            "updated_at": r.updated_at,
        }
        for r in rules
    ]


_RULES_COLUMNS = ("merchant_id", "mode", "pin", "exclude", "split", "updated_at")


async def _rules_set(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    rules = await service.set_card_rules(
        conn, a.merchant, mode=Mode(a.mode), pin=a.pin, exclude=a.exclude, split=a.split
    )
    return rules if a.json else _table(_rules_rows([rules]), _RULES_COLUMNS)


async def _rules_show(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    mode = Mode(a.mode) if a.mode else None
    rules = await service.show_card_rules(conn, a.merchant, mode)
    return rules if a.json else _table(_rules_rows(rules), _RULES_COLUMNS)


async def _rules_clear(conn: AsyncConnection, a: argparse.Namespace, s: AdminSettings) -> Any:
    cleared = await service.clear_card_rules(conn, a.merchant, mode=Mode(a.mode))
    if a.json:
        return {"merchant_id": a.merchant, "mode": a.mode, "cleared": cleared}
    return f"{a.merchant} ({a.mode}): " + ("rules cleared" if cleared else "had no rules")


# --- parser ---------------------------------------------------------------------------------


_GUARD_HELP = (
    "a create repeating a client_reference_id (same sub-merchant, network and currency) "
    "answers the existing session, or 410 session_expired if it expired"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer Pago: merchants, sub-merchants, API keys, fees, xpubs, pools, "
        "OAuth clients and signing keys, card routing rules.",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parent = groups.add_parser(name, help=help_text, description=help_text)
        return parent.add_subparsers(dest="command", required=True, metavar="ACTION")

    modes = [m.value for m in Mode]
    merchant = group("merchant", "merchants and their fee and expiry settings")
    create = command(merchant, "create", _merchant_create, "create a merchant; prints its id")
    create.add_argument("--name", required=True)
    create.add_argument("--id", help="choose the id (default: mch_<random>)")
    create.add_argument("--logo-url")
    create.add_argument("--fee-rate", help="fraction of received, e.g. 0.005 (default: platform)")
    create.add_argument("--fee-floor", help="minimum fee in whole tokens (default: platform)")
    create.add_argument("--expiry-minutes", type=int, default=30, help="session lifetime")
    create.add_argument(
        "--exist-ok", action="store_true", help="with --id: an existing merchant is fine"
    )
    create.add_argument(
        "--duplicate-order-guard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=_GUARD_HELP + " (default: on)",
    )
    command(merchant, "list", _merchant_list, "list merchants with their effective fees")
    upd = command(merchant, "update", _merchant_update, "set name, logo, fees, expiry, order guard")
    upd.add_argument("merchant", help="merchant id")
    upd.add_argument("--name")
    upd.add_argument("--logo-url", help="'' removes the logo")
    upd.add_argument("--fee-rate", help="fraction of received, or 'default'")
    upd.add_argument("--fee-floor", help="whole tokens, or 'default'")
    upd.add_argument("--expiry-minutes", type=int)
    upd.add_argument(
        "--duplicate-order-guard", action=argparse.BooleanOptionalAction, help=_GUARD_HELP
    )

    sub = group("sub-merchant", "sub-merchants (X-Sub-Merchant-Code)")
    screate = command(sub, "create", _sub_create, "create a sub-merchant; prints its id")
    screate.add_argument("merchant", help="parent merchant id")
    screate.add_argument("--code", required=True)
    screate.add_argument("--name", required=True)
    screate.add_argument("--exist-ok", action="store_true", help="an existing code is fine")
    command(sub, "list", _sub_list, "list a merchant's sub-merchants").add_argument("merchant")
    for name, active in (("activate", True), ("deactivate", False)):
        toggle = command(sub, name, _sub_active(active), f"{name} a sub-merchant")
        toggle.add_argument("merchant")
        toggle.add_argument("code")

    key = group("key", "API keys")
    kcreate = command(key, "create", _key_create, "create an API key; prints it (only this once)")
    kcreate.add_argument("merchant", help="merchant id")
    kcreate.add_argument("--mode", required=True, choices=modes)
    kcreate.add_argument("--label")
    command(key, "list", _key_list, "list a merchant's keys (hints only)").add_argument("merchant")
    command(key, "revoke", _key_revoke, "revoke a key at once").add_argument("key_id")

    xpub = group("xpub", "account-level xpubs for EVM and TRON deposit addresses")
    xreg = command(xpub, "register", _xpub_register, "register an xpub; prints its id")
    xreg.add_argument("merchant", help="merchant id")
    xreg.add_argument("--family", required=True, choices=[ChainFamily.EVM, ChainFamily.TRON])
    xreg.add_argument("--mode", required=True, choices=modes)
    xreg.add_argument("--replace", action="store_true", help="retire the active one first")
    xreg.add_argument("xpub", help="account-level extended public key (m/44'/coin'/0')")
    command(xpub, "list", _xpub_list, "list a merchant's xpubs").add_argument("merchant")

    pool = group("pool", "imported deposit-address pools (Solana, or any family)")
    pimport = command(pool, "import", _pool_import, "import addresses, one per line")
    pimport.add_argument("merchant", help="merchant id")
    pimport.add_argument("--family", required=True, choices=[f.value for f in ChainFamily])
    pimport.add_argument("--mode", required=True, choices=modes)
    pimport.add_argument("file", help="a file of addresses, or - for stdin")
    command(pool, "status", _pool_status, "count pool addresses").add_argument("merchant")
    depth = command(
        pool,
        "depth",
        _pool_depth,
        "available, cooling, held and leased addresses of every pool (or one merchant's)",
    )
    depth.add_argument("merchant", nargs="?", help="only this merchant's pools")
    oauth = group("oauth-client", "OAuth clients of the card API (POST /oauth/token)")
    scope_help = "allowed scope (repeatable or space-separated; default: all)"
    ocreate = command(
        oauth, "create", _oauth_create, "create a client; prints its id and secret (only once)"
    )
    ocreate.add_argument("--merchant", required=True, help="merchant id")
    ocreate.add_argument("--mode", required=True, choices=modes)
    ocreate.add_argument("--scope", action="append", help=scope_help)
    ocreate.add_argument("--label")
    oext = command(
        oauth,
        "create-external",
        _oauth_create_external,
        "register a client of a trusted OIDC issuer by its tokens' iss and sub; prints its id",
    )
    oext.add_argument("--merchant", required=True, help="merchant id")
    oext.add_argument("--mode", required=True, choices=modes)
    oext.add_argument("--issuer", required=True, help="the issuer URL (its tokens' iss)")
    oext.add_argument("--subject", required=True, help="its tokens' sub")
    oext.add_argument("--scope", action="append", help=scope_help)
    oext.add_argument("--label")
    olist = command(oauth, "list", _oauth_list, "list clients (secret hints only)")
    olist.add_argument("--merchant", help="only this merchant's clients")
    command(oauth, "revoke", _oauth_revoke, "revoke a client (no new tokens)").add_argument(
        "client_id"
    )
    rules = group(
        "card-rules",
        "a merchant's card routing rules per mode: pin, exclude or split volume",
    )
    providers = [p.value for p in CardProvider]
    rset = command(
        rules,
        "set",
        _rules_set,
        "replace the merchant's rules in this mode (the next card session uses them)",
    )
    rset.add_argument("--merchant", required=True, help="merchant id")
    rset.add_argument("--mode", required=True, choices=modes)
    rset.add_argument("--pin", choices=providers, help="always this provider when it can")
    rset.add_argument(
        "--exclude", action="append", default=[], choices=providers, help="never (repeatable)"
    )
    rset.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="PROVIDER=PERCENT",
        help="volume share of the first attempt (repeatable; shares sum to 100)",
    )
    rshow = command(rules, "show", _rules_show, "show the merchant's rules")
    rshow.add_argument("--merchant", required=True, help="merchant id")
    rshow.add_argument("--mode", choices=modes, help="only this mode")
    rclear = command(rules, "clear", _rules_clear, "remove the rules: route by score alone")
    rclear.add_argument("--merchant", required=True, help="merchant id")
    rclear.add_argument("--mode", required=True, choices=modes)
    okey = group("oauth-key", "the card API's token-signing keys")
    command(okey, "rotate", _oauth_key_rotate, "create a new signing key now; prints its kid")
    return parser


async def _run(handler: Handler, args: argparse.Namespace, settings: AdminSettings) -> Any:
    engine = create_engine(settings.database_url, pool_size=1, application_name=PROG)
    try:
        async with engine.begin() as conn:
            return await handler(conn, args, settings)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = AdminSettings()
    except ValidationError as exc:
        exit_with(PROG, describe_validation_error(AdminSettings, exc))
    try:
        result = asyncio.run(_run(args.handler, args, settings))
    except AdminError as exc:
        _fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        _fail(f"database error: {detail[0] if detail else exc.__class__.__name__}")
    if args.json:
        print(json.dumps(_jsonable(result), indent=2, sort_keys=True))
    elif result is not None:
        print(result)


if __name__ == "__main__":
    main()
