"""Builds the OAuth service from the api's settings (called by ``create_app``'s lifespan)."""

from __future__ import annotations

import contextlib

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.oauth.external import ExternalIssuers
from pago.api.oauth.keyring import Keyring, Lifetimes
from pago.api.oauth.service import OAuthService, TokenPolicy
from pago.api.ratelimit import Limit, RateLimiter
from pago.api.settings import ApiSettings


async def build_oauth(
    settings: ApiSettings,
    engine: AsyncEngine,
    limiter: RateLimiter,
    pepper: bytes,
    stack: contextlib.AsyncExitStack,
) -> OAuthService:
    http = httpx.AsyncClient(
        timeout=settings.oauth_external_http_timeout_seconds, follow_redirects=False
    )
    stack.push_async_callback(http.aclose)
    return OAuthService(
        engine,
        keyring=Keyring(
            engine, secret=settings.oauth_encryption_secret, lifetimes=Lifetimes.of(settings)
        ),
        external=ExternalIssuers(
            dict(settings.oauth_trusted_issuers),
            http,
            ttl=settings.oauth_external_jwks_ttl_seconds,
            min_refetch=settings.oauth_external_jwks_min_refetch_seconds,
        ),
        policy=TokenPolicy(
            issuer=settings.oauth_issuer_url,
            audience=settings.oauth_audience,
            ttl_seconds=settings.oauth_token_ttl_seconds,
            leeway_seconds=settings.oauth_leeway_seconds,
        ),
        pepper=pepper,
        limiter=limiter,
        client_limit=Limit(settings.rate_limit_per_second, settings.rate_limit_burst),
        ip_limit=Limit(settings.ip_rate_limit_per_second, settings.ip_rate_limit_burst),
    )
