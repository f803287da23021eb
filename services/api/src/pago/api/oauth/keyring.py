"""Pago's rotating signing keys: which key signs now, which verify, and rotation.

Lifecycle of a key (all times in ``oauth_signing_keys``):

- created by a rotation with ``not_before``: now for the first key or a forced rotation
  (``pago-admin oauth-key rotate``), else now + the JWKS max-age, so every verifier's cached
  JWKS already holds it when it starts signing;
- signs while it is the newest started key;
- when a successor is created, its ``retire_at`` becomes the successor's start + the token
  lifetime + the leeway + this cache's refresh interval (a replica may sign with it until it
  next reloads): every token it signed has expired by then;
- is published in the JWKS and accepted until ``retire_at``.

Rotation takes a transaction-scoped advisory lock and re-reads the newest start under it, so
replicas that find rotation due at the same moment create one key; the unique index on
``not_before`` is the backstop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.oauth import repository
from pago.api.oauth.credentials import (
    SIGNING_ALGORITHM,
    decrypt_private_key,
    encrypt_private_key,
    generate_signing_key,
)
from pago.api.oauth.settings import OAuthSettings

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0
"""How often a process reloads the keys (another replica may have rotated)."""
UNKNOWN_KID_RELOAD_SECONDS = 1.0
"""An unknown ``kid`` reloads at most this often: random kids cost one query a second."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    key: ECKey
    public_jwk: dict[str, Any]
    not_before: datetime
    retire_at: datetime | None


@dataclass(frozen=True, slots=True)
class Lifetimes:
    rotation: timedelta
    """A key signs for this long before its successor is created."""
    prepublish: timedelta
    """A scheduled successor is published this long before it signs."""
    overlap: timedelta
    """A retired key stays published this long after its successor starts."""

    @classmethod
    def of(cls, settings: OAuthSettings) -> Lifetimes:
        return cls(
            rotation=timedelta(days=settings.oauth_key_rotation_days),
            prepublish=timedelta(seconds=settings.oauth_jwks_max_age_seconds),
            overlap=timedelta(
                seconds=settings.oauth_token_ttl_seconds
                + settings.oauth_leeway_seconds
                + REFRESH_SECONDS
            ),
        )


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def rotate(
    conn: AsyncConnection,
    *,
    secret: bytes,
    lifetimes: Lifetimes,
    now: datetime,
    force: bool,
) -> str | None:
    """Create the next key in ``conn``'s transaction, or None when another replica did it
    (a scheduled rotation that is no longer due). Returns the new kid."""
    await repository.lock_rotation(conn)
    newest = await repository.newest_start(conn)
    if not force and newest is not None and newest + lifetimes.rotation > now:
        return None
    key = generate_signing_key()
    start = now if force or newest is None else max(now + lifetimes.prepublish, newest)
    if newest is not None and start <= newest:
        start = newest + timedelta(microseconds=1)  # not_before is unique
    await repository.retire_before(conn, start, start + lifetimes.overlap)
    pem = key.as_pem(private=True)
    await repository.insert_key(
        conn,
        {
            "kid": key.kid,
            "algorithm": SIGNING_ALGORITHM,
            "public_jwk": key.as_dict(private=False),
            "private_key": encrypt_private_key(secret, str(key.kid), pem),
            "created_at": now,
            "not_before": start,
        },
    )
    log.info("oauth signing key created", extra={"kid": key.kid, "not_before": start.isoformat()})
    return str(key.kid)


class Keyring:
    """The process's cached copy of the published keys (private halves decrypted)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        secret: bytes,
        lifetimes: Lifetimes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._lifetimes = lifetimes
        self._clock = clock
        self._keys: list[SigningKey] = []
        self._loaded_at = float("-inf")
        self._unknown_reload_at = float("-inf")
        self._lock = asyncio.Lock()

    def _now(self) -> datetime:
        return utc(self._clock())

    async def _load(self) -> None:
        async with self._engine.connect() as conn:
            rows = await repository.published_keys(conn, self._now())
        keys = []
        for row in rows:
            pem = decrypt_private_key(self._secret, row.kid, row.private_key)
            key = ECKey.import_key(pem, {"kid": row.kid, "alg": row.algorithm, "use": "sig"})
            keys.append(SigningKey(row.kid, key, row.public_jwk, row.not_before, row.retire_at))
        self._keys = keys
        self._loaded_at = self._clock()

    async def _fresh(self) -> None:
        if self._clock() - self._loaded_at >= REFRESH_SECONDS:
            async with self._lock:
                if self._clock() - self._loaded_at >= REFRESH_SECONDS:
                    await self._load()

    def _published(self, now: datetime) -> list[SigningKey]:
        return [k for k in self._keys if k.retire_at is None or k.retire_at > now]

    def _signer(self, now: datetime) -> SigningKey | None:
        started = [k for k in self._published(now) if k.not_before <= now]
        return started[-1] if started else None

    async def signer(self) -> SigningKey:
        """The key to sign with now, rotating first when none signs or rotation is due."""
        await self._fresh()
        now = self._now()
        newest = self._keys[-1] if self._keys else None
        current = self._signer(now)
        if current is None or newest is None or newest.not_before + self._lifetimes.rotation <= now:
            async with self._lock:
                async with self._engine.begin() as conn:
                    await rotate(
                        conn, secret=self._secret, lifetimes=self._lifetimes, now=now, force=False
                    )
                await self._load()
            current = self._signer(self._now())
            if current is None:  # only a clock far behind the database's keys gets here
                raise RuntimeError("no oauth signing key has started yet")
        return current

    async def rotate_now(self) -> str:
        """A forced rotation (the new key signs at once), then a reload."""
        async with self._lock:
            async with self._engine.begin() as conn:
                kid = await rotate(
                    conn,
                    secret=self._secret,
                    lifetimes=self._lifetimes,
                    now=self._now(),
                    force=True,
                )
            await self._load()
        if kid is None:  # force always creates one
            raise RuntimeError("forced rotation created no key")
        return kid

    async def verifying_key(self, kid: str) -> ECKey | None:
        """The published key ``kid``, reloading once when it is unknown (another replica's new
        key), at most every ``UNKNOWN_KID_RELOAD_SECONDS``."""
        await self._fresh()
        found = self._find(kid)
        if found is None and self._clock() - self._unknown_reload_at >= UNKNOWN_KID_RELOAD_SECONDS:
            self._unknown_reload_at = self._clock()
            async with self._lock:
                await self._load()
            found = self._find(kid)
        return found

    def _find(self, kid: str) -> ECKey | None:
        for key in self._published(self._now()):
            if key.kid == kid:
                return key.key
        return None

    async def jwks(self) -> dict[str, Any]:
        """Every published key's public half (pending successors too)."""
        await self._fresh()
        return {"keys": [k.public_jwk for k in self._published(self._now())]}
