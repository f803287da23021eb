"""Trusted external OIDC issuers: their JWKS, fetched over HTTP and cached.

A JWKS is used for ``ttl`` seconds, then fetched again (a failed fetch is retried at most
once a second); a token whose ``kid`` the cached set lacks (the issuer rotated) refetches it
at once, but such refetches happen at most every ``min_refetch`` seconds per issuer. A
failed fetch keeps the last good set (logged); with none at all the token
cannot be checked, which is the issuer's outage, not the client's fault: 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from pago.api.errors import ServiceUnavailable
from pago.api.oauth.settings import TrustedIssuer

log = logging.getLogger(__name__)

_MAX_JWKS_BYTES = 256 * 1024


@dataclass(slots=True)
class _Cached:
    keys: KeySet | None = None
    fetched_at: float = float("-inf")
    attempted_at: float = float("-inf")
    kid_refetch_at: float = float("-inf")
    """The last fetch an unknown kid caused: those are limited to one per ``min_refetch``."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ExternalIssuers:
    def __init__(
        self,
        issuers: dict[str, TrustedIssuer],
        http: httpx.AsyncClient,
        *,
        ttl: float,
        min_refetch: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers = issuers
        self._http = http
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self._cache = {issuer: _Cached() for issuer in issuers}

    def trusted(self, issuer: str) -> TrustedIssuer | None:
        return self._issuers.get(issuer)

    async def key_set(self, issuer: str, kid: str | None) -> KeySet:
        """The issuer's keys, refetched when stale or when ``kid`` is not among them."""
        cached = self._cache[issuer]
        if cached.keys is not None and self._usable(cached, kid):
            return cached.keys
        async with cached.lock:
            now = self._clock()
            stale = cached.keys is None or now - cached.fetched_at >= self._ttl
            if stale and now - cached.attempted_at >= min(self._min_refetch, 1.0):
                await self._fetch(issuer, cached)
            elif not self._usable(cached, kid) and now - cached.kid_refetch_at >= self._min_refetch:
                cached.kid_refetch_at = now
                await self._fetch(issuer, cached)
        if cached.keys is None:
            raise ServiceUnavailable(
                "The token's issuer publishes no keys right now; retry shortly.",
                code="issuer_unavailable",
            )
        return cached.keys

    def _usable(self, cached: _Cached, kid: str | None) -> bool:
        if cached.keys is None or self._clock() - cached.fetched_at >= self._ttl:
            return False
        return kid is None or _has_kid(cached.keys, kid)

    async def _fetch(self, issuer: str, cached: _Cached) -> None:
        url = self._issuers[issuer].jwks_url
        cached.attempted_at = self._clock()
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning(
                "could not fetch a trusted issuer's JWKS",
                extra={"issuer": issuer, "jwks_url": url, "error": repr(exc)},
            )
            return
        cached.keys = keys
        cached.fetched_at = self._clock()


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)
