"""Admin operations (the CLI's business logic). Functions never commit: the CLI does.

Every refusal is an ``AdminError`` whose message is the one line the operator reads.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.addresses import repository as addresses
from pago.api.addresses.codec import AddressError, derivable, normalize_address, validate_xpub
from pago.api.admin import repository
from pago.api.auth.keys import SUB_MERCHANT_CODE, generate_key, hash_key, key_hint
from pago.api.cards.routing.rules import InvalidRules, parse_rules, parse_share, stored
from pago.api.ids import new_id
from pago.api.oauth import keyring
from pago.api.oauth.credentials import (
    KNOWN_SCOPES,
    generate_client_id,
    generate_client_secret,
    hash_client_secret,
    secret_hint,
)
from pago.api.oauth.settings import OAuthSettings
from pago.api.validation import http_url
from pago.common.enums import ChainFamily, Mode

MAX_EXPIRY_MINUTES = 7 * 24 * 60
_NAME_MAX = 200


class AdminError(Exception):
    """A refused admin operation; the message says why in one line."""


_UNSET: Any = object()
"""A keyword argument that was not given (None means "back to the platform default")."""


def _now() -> datetime:
    return datetime.now(UTC)


def _name(value: str, what: str = "name") -> str:
    value = value.strip()
    if not value or len(value) > _NAME_MAX or "\x00" in value:
        raise AdminError(f"{what} must be 1 to {_NAME_MAX} characters")
    return value


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def parse_fee_rate(text: str) -> Decimal:
    """A fraction of the amount received: ``0.005`` is 0.5 %."""
    try:
        rate = Decimal(text)
    except decimal.InvalidOperation:
        raise AdminError(f"fee rate {text!r} is not a decimal number (0.005 is 0.5 %)") from None
    if not rate.is_finite() or not 0 <= rate < 1 or _places(rate) > 6:
        raise AdminError(f"fee rate {text!r} must be in [0, 1) with at most 6 decimals")
    return rate


def parse_fee_floor(text: str) -> Decimal:
    """Whole tokens (``1`` is 1 USDT)."""
    try:
        floor = Decimal(text)
    except decimal.InvalidOperation:
        raise AdminError(f"fee floor {text!r} is not a decimal number of tokens") from None
    if not floor.is_finite() or not 0 <= floor < 10**20 or _places(floor) > 18:
        raise AdminError(f"fee floor {text!r} must be >= 0 tokens with at most 18 decimals")
    return floor


def _expiry(minutes: int) -> int:
    if not 1 <= minutes <= MAX_EXPIRY_MINUTES:
        raise AdminError(f"expiry minutes must be 1 to {MAX_EXPIRY_MINUTES}")
    return minutes


def _logo(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        return http_url(url)
    except ValueError:
        raise AdminError(f"logo URL {url!r} is not an absolute http(s) URL") from None


async def _merchant(conn: AsyncConnection, merchant_id: str) -> repository.MerchantRow:
    merchant = await repository.get_merchant(conn, merchant_id)
    if merchant is None:
        raise AdminError(f"no merchant {merchant_id!r}")
    return merchant


# --- merchants ------------------------------------------------------------------------------


async def create_merchant(
    conn: AsyncConnection,
    *,
    name: str,
    logo_url: str | None = None,
    fee_rate: Decimal | None = None,
    fee_floor: Decimal | None = None,
    expiry_minutes: int = 30,
    merchant_id: str | None = None,
    exist_ok: bool = False,
    duplicate_order_guard: bool = True,
) -> str:
    """Create a merchant; with ``exist_ok`` an existing ``merchant_id`` is returned unchanged
    (re-runnable seeding)."""
    merchant_id = merchant_id or new_id("mch")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", merchant_id):
        raise AdminError("a merchant id is 1 to 64 letters, digits, '_' or '-'")
    if await repository.get_merchant(conn, merchant_id) is not None:
        if exist_ok:
            return merchant_id
        raise AdminError(f"merchant {merchant_id!r} already exists")
    await repository.insert_merchant(
        conn,
        {
            "id": merchant_id,
            "name": _name(name),
            "logo_url": _logo(logo_url),
            "fee_rate": fee_rate,
            "fee_floor": fee_floor,
            "session_expiry_minutes": _expiry(expiry_minutes),
            "duplicate_order_guard": duplicate_order_guard,
        },
    )
    return merchant_id


async def update_merchant(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    name: str | None = None,
    logo_url: Any = _UNSET,
    fee_rate: Any = _UNSET,
    fee_floor: Any = _UNSET,
    expiry_minutes: int | None = None,
    duplicate_order_guard: bool | None = None,
) -> repository.MerchantRow:
    """Change what is given; ``fee_rate=None`` / ``fee_floor=None`` restore the defaults."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = _name(name)
    if logo_url is not _UNSET:
        values["logo_url"] = _logo(logo_url)
    if fee_rate is not _UNSET:
        values["fee_rate"] = fee_rate
    if fee_floor is not _UNSET:
        values["fee_floor"] = fee_floor
    if expiry_minutes is not None:
        values["session_expiry_minutes"] = _expiry(expiry_minutes)
    if duplicate_order_guard is not None:
        values["duplicate_order_guard"] = duplicate_order_guard
    if not values:
        raise AdminError("nothing to change; give at least one option")
    if not await repository.update_merchant(conn, merchant_id, values):
        raise AdminError(f"no merchant {merchant_id!r}")
    return await _merchant(conn, merchant_id)


async def list_merchants(conn: AsyncConnection) -> list[repository.MerchantRow]:
    return await repository.list_merchants(conn)


# --- sub-merchants --------------------------------------------------------------------------


async def create_sub_merchant(
    conn: AsyncConnection, merchant_id: str, *, code: str, name: str, exist_ok: bool = False
) -> str:
    await _merchant(conn, merchant_id)
    if not SUB_MERCHANT_CODE.fullmatch(code):
        raise AdminError(
            f"sub-merchant code {code!r} must be 1 to 64 letters, digits, '_', '.' or '-' "
            "(starting with a letter or digit)"
        )
    existing = await repository.sub_merchant_id(conn, merchant_id, code)
    if existing is not None:
        if exist_ok:
            return existing
        raise AdminError(f"merchant {merchant_id!r} already has a sub-merchant {code!r}")
    sub_id = new_id("sub")
    await repository.insert_sub_merchant(
        conn, {"id": sub_id, "merchant_id": merchant_id, "code": code, "name": _name(name)}
    )
    return sub_id


async def list_sub_merchants(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    await _merchant(conn, merchant_id)
    return await repository.list_sub_merchants(conn, merchant_id)


async def set_sub_merchant_active(
    conn: AsyncConnection, merchant_id: str, code: str, *, active: bool
) -> None:
    await _merchant(conn, merchant_id)
    if not await repository.set_sub_merchant_active(conn, merchant_id, code, active):
        raise AdminError(f"merchant {merchant_id!r} has no sub-merchant {code!r}")


# --- API keys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    key: str
    """The secret itself: shown once, stored only as its HMAC."""
    mode: Mode
    merchant_id: str


async def create_api_key(
    conn: AsyncConnection, merchant_id: str, *, mode: Mode, pepper: bytes, label: str | None = None
) -> NewKey:
    await _merchant(conn, merchant_id)
    key = generate_key(mode)
    key_id = new_id("key")
    await repository.insert_api_key(
        conn,
        {
            "id": key_id,
            "merchant_id": merchant_id,
            "mode": mode.value,
            "key_hash": hash_key(pepper, key),
            "key_hint": key_hint(key),
            "label": _name(label, "label") if label is not None else None,
        },
    )
    return NewKey(key_id, key, mode, merchant_id)


async def list_api_keys(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    await _merchant(conn, merchant_id)
    return await repository.list_api_keys(conn, merchant_id)


async def revoke_api_key(conn: AsyncConnection, key_id: str) -> str:
    revoked_at = await repository.revoke_api_key(conn, key_id, _now())
    if revoked_at is None:
        raise AdminError(f"no API key {key_id!r}")
    return revoked_at


# --- deposit addresses ----------------------------------------------------------------------


async def register_xpub(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    family: ChainFamily,
    mode: Mode,
    xpub: str,
    replace: bool = False,
) -> str:
    """Register an account-level xpub and create its index sequence.

    Registering the active xpub again is a no-op; re-registering one the merchant used before
    (``replace``) continues after its highest used index; one registered by another merchant
    is refused (both would derive the same addresses).
    """
    await _merchant(conn, merchant_id)
    if not derivable(family):
        raise AdminError(f"{family} addresses cannot be derived from an xpub; import a pool")
    xpub = xpub.strip()
    try:
        validate_xpub(xpub, family)
    except AddressError as exc:
        raise AdminError(str(exc)) from None
    owner = await repository.xpub_owner(conn, xpub)
    if owner is not None and owner != merchant_id:
        raise AdminError("this xpub is registered to another merchant")
    current = await repository.active_xpub(conn, merchant_id, family.value, mode.value)
    if current is not None:
        current_id, current_xpub = current
        if current_xpub == xpub and not replace:
            return current_id  # already registered: nothing to do (re-runnable seeding)
        if not replace:
            raise AdminError(
                f"merchant {merchant_id!r} already has an active {family} xpub in {mode} mode "
                f"({current_id}); pass --replace to retire it"
            )
        await repository.retire_xpub(conn, current_id, _now())
    used = await repository.max_derived_index(conn, merchant_id, xpub)
    xpub_id = new_id("xpub")
    sequence = f"deposit_index_{xpub_id.removeprefix('xpub_')}"
    await repository.create_index_sequence(conn, sequence, 0 if used is None else used + 1)
    await repository.insert_xpub(
        conn,
        {
            "id": xpub_id,
            "merchant_id": merchant_id,
            "family": family.value,
            "mode": mode.value,
            "xpub": xpub,
            "index_sequence": sequence,
        },
    )
    return xpub_id


async def list_xpubs(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    await _merchant(conn, merchant_id)
    return await repository.list_xpubs(conn, merchant_id)


@dataclass(frozen=True, slots=True)
class PoolImport:
    added: int
    skipped: int
    """Already known (in this or any pool, or derived)."""


async def import_pool(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    family: ChainFamily,
    mode: Mode,
    lines: Iterable[str],
) -> PoolImport:
    """Import one address per line (blank lines and ``#`` comments ignored); all or nothing."""
    await _merchant(conn, merchant_id)
    addresses_seen: dict[str, None] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            addresses_seen[normalize_address(family, text)] = None
        except AddressError as exc:
            raise AdminError(
                f"line {number}: {text[:60]!r} is not a {family} address ({exc})"
            ) from None
    if not addresses_seen:
        raise AdminError("no addresses in the input")
    wanted = list(addresses_seen)
    added = 0
    for start in range(0, len(wanted), 5_000):
        added += await addresses.insert_pool(
            conn,
            merchant_id=merchant_id,
            family=family.value,
            mode=mode.value,
            addresses=wanted[start : start + 5_000],
        )
    return PoolImport(added=added, skipped=len(wanted) - added)


async def pool_status(conn: AsyncConnection, merchant_id: str) -> list[dict[str, Any]]:
    await _merchant(conn, merchant_id)
    return await repository.pool_status(conn, merchant_id)


async def pool_depth(
    conn: AsyncConnection,
    merchant_id: str | None,
    *,
    cooldown: timedelta,
    low_water: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every pool's depth (or one merchant's), by the same rules the api leases with.

    ``low`` marks a pool in use (no active xpub for its family and mode) with fewer available
    addresses than ``low_water``; ``derived`` one that idles because an xpub serves creates.
    """
    if merchant_id is not None:
        await _merchant(conn, merchant_id)
    depths = await addresses.pool_depth(
        conn, now=now or _now(), cooldown=cooldown, merchant_id=merchant_id
    )
    return [
        {
            "merchant_id": d.merchant_id,
            "family": d.family,
            "mode": d.mode,
            "available": d.available,
            "never_used": d.never_used,
            "cooled": d.cooled,
            "cooling": d.cooling,
            "held": d.held,
            "leased": d.leased,
            "total": d.total,
            "derived": d.derived,
            "low": not d.derived and d.available < low_water,
        }
        for d in depths
    ]


# --- OAuth clients and signing keys (the card API) ------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOAuthClient:
    client_id: str
    client_secret: str | None
    """Shown once, stored only as its HMAC; None for a client of an external issuer."""
    merchant_id: str
    mode: Mode
    scopes: list[str]


def _scopes(scopes: Iterable[str] | None) -> list[str]:
    if scopes is None:
        return sorted(KNOWN_SCOPES)
    chosen = sorted({s for scope in scopes for s in scope.split()})
    unknown = [s for s in chosen if s not in KNOWN_SCOPES]
    if unknown or not chosen:
        raise AdminError(
            f"unknown scope {' '.join(unknown) or '(none)'}; known: {' '.join(KNOWN_SCOPES)}"
        )
    return chosen


async def create_oauth_client(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    mode: Mode,
    pepper: bytes,
    scopes: Iterable[str] | None = None,
    label: str | None = None,
) -> NewOAuthClient:
    """A client of ``POST /oauth/token`` (client credentials): its id and secret."""
    await _merchant(conn, merchant_id)
    allowed = _scopes(scopes)
    client_id, secret = generate_client_id(), generate_client_secret()
    await repository.insert_oauth_client(
        conn,
        {
            "id": client_id,
            "merchant_id": merchant_id,
            "mode": mode.value,
            "secret_hash": hash_client_secret(pepper, secret),
            "secret_hint": secret_hint(secret),
            "scopes": allowed,
            "label": _name(label, "label") if label is not None else None,
        },
    )
    return NewOAuthClient(client_id, secret, merchant_id, mode, allowed)


async def create_external_oauth_client(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    mode: Mode,
    issuer: str,
    subject: str,
    scopes: Iterable[str] | None = None,
    label: str | None = None,
) -> NewOAuthClient:
    """A client that signs in through a trusted OIDC issuer: its tokens' ``(iss, sub)``."""
    await _merchant(conn, merchant_id)
    if not issuer.startswith(("https://", "http://")):
        raise AdminError("--issuer must be the issuer's URL (its tokens' iss)")
    if not subject.strip():
        raise AdminError("--subject must not be empty")
    if await repository.external_client_exists(conn, issuer, subject):
        raise AdminError(f"a client for subject {subject!r} of {issuer} already exists")
    allowed = _scopes(scopes)
    client_id = generate_client_id()
    await repository.insert_oauth_client(
        conn,
        {
            "id": client_id,
            "merchant_id": merchant_id,
            "mode": mode.value,
            "scopes": allowed,
            "external_issuer": issuer,
            "external_subject": subject,
            "label": _name(label, "label") if label is not None else None,
        },
    )
    return NewOAuthClient(client_id, None, merchant_id, mode, allowed)


async def list_oauth_clients(
    conn: AsyncConnection, merchant_id: str | None = None
) -> list[dict[str, Any]]:
    if merchant_id is not None:
        await _merchant(conn, merchant_id)
    rows = await repository.list_oauth_clients(conn, merchant_id)
    for row in rows:
        row["scopes"] = " ".join(row["scopes"])
    return rows


async def revoke_oauth_client(conn: AsyncConnection, client_id: str) -> str:
    """Revoked at once for new tokens; tokens already issued live out their lifetime."""
    revoked_at = await repository.revoke_oauth_client(conn, client_id, _now())
    if revoked_at is None:
        raise AdminError(f"no OAuth client {client_id!r}")
    return revoked_at


async def rotate_oauth_key(conn: AsyncConnection, settings: OAuthSettings) -> str:
    """A new signing key that signs at once (every api replica picks it up within a minute);
    the previous one stays published until its tokens expired."""
    kid = await keyring.rotate(
        conn,
        secret=settings.oauth_encryption_secret,
        lifetimes=keyring.Lifetimes.of(settings),
        now=_now(),
        force=True,
    )
    if kid is None:  # a forced rotation always creates a key
        raise AdminError("no key was created")
    return kid


# --- card routing rules (the card API) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardRules:
    """A merchant's routing rules in one mode, as stored (``pago.api.cards.routing.rules``)."""

    merchant_id: str
    mode: Mode
    pin: str | None
    exclude: list[str]
    split: dict[str, int] | None
    """Whole percents by provider, summing to 100."""
    updated_at: datetime


def _shares(texts: Sequence[str]) -> dict[str, int] | None:
    if not texts:
        return None
    shares: dict[str, int] = {}
    for text in texts:
        name, share = parse_share(text)
        key = name.lower()
        if key in shares:
            raise InvalidRules(f"split names {key} twice")
        shares[key] = share
    return shares


async def set_card_rules(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    mode: Mode,
    pin: str | None = None,
    exclude: Iterable[str] = (),
    split: Sequence[str] = (),
) -> CardRules:
    """Replace the merchant's rules in ``mode`` (what is not given is no longer a rule); the
    api reads them on every create, so the next session is routed by them on every replica."""
    await _merchant(conn, merchant_id)
    try:
        rules = parse_rules(pin=pin, exclude=exclude, split=_shares(split))
    except InvalidRules as exc:
        raise AdminError(str(exc)) from None
    values = stored(rules)
    now = _now()
    await repository.upsert_card_rules(conn, merchant_id, mode.value, values, now)
    return CardRules(
        merchant_id,
        mode,
        rules.pin.value if rules.pin is not None else None,
        sorted(p.value for p in rules.exclude),
        {p.value: share for p, share in sorted(rules.split.items())} if rules.split else None,
        now,
    )


async def show_card_rules(
    conn: AsyncConnection, merchant_id: str, mode: Mode | None = None
) -> list[CardRules]:
    await _merchant(conn, merchant_id)
    rows = await repository.card_rules(conn, merchant_id, mode.value if mode else None)
    return [
        CardRules(
            r["merchant_id"],
            Mode(r["mode"]),
            r["pin"],
            list(r["exclude"]),
            r["split"],
            r["updated_at"],
        )
        for r in rows
    ]


async def clear_card_rules(conn: AsyncConnection, merchant_id: str, *, mode: Mode) -> bool:
    """Back to routing by score alone; ``False`` when there were no rules."""
    await _merchant(conn, merchant_id)
    return await repository.delete_card_rules(conn, merchant_id, mode.value)
