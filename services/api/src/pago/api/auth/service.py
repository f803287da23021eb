"""Admission of a request: rate limit, API key, sub-merchant — in that order of buckets.

A request with a valid key is limited per key; a request without one (missing, malformed,
unknown or revoked) is limited per client IP before it is refused, so trying random keys is
throttled like any other traffic from that address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request

from pago.api.auth import repository
from pago.api.auth.keys import SUB_MERCHANT_CODE, hash_key, key_hint, key_mode
from pago.api.auth.principal import MerchantProfile, Principal, SubMerchantRef
from pago.api.errors import AuthenticationFailed, InvalidSubMerchantCode
from pago.api.ratelimit import Limit, RateLimiter
from pago.common.enums import Mode

log = logging.getLogger(__name__)

SUB_MERCHANT_HEADER = "X-Sub-Merchant-Code"

_TOUCH_EVERY_S = 60.0
"""``api_keys.last_used_at`` is informational: one write per key per minute per process keeps
the hot path free of row updates (32 clients on one key would otherwise queue on its lock)."""


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


class Authenticator:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pepper: bytes,
        limiter: RateLimiter,
        key_limit: Limit,
        ip_limit: Limit,
    ) -> None:
        self._engine = engine
        self._pepper = pepper
        self._limiter = limiter
        self._key_limit = key_limit
        self._ip_limit = ip_limit
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def admit(
        self,
        request: Request,
        connection: Callable[[], Awaitable[AsyncConnection]] | None = None,
    ) -> Principal:
        """The caller, or ``RateLimited``/``AuthenticationFailed``/``InvalidSubMerchantCode``.

        ``connection`` opens the request's own transaction (one pool checkout per request);
        without it a short autocommit connection is used. Neither is touched for a request
        without a well-formed key.
        """
        token = bearer_token(request)
        # An empty header is an absent one (some clients send every header they know).
        code = request.headers.get(SUB_MERCHANT_HEADER.lower()) or None
        code_ok = code is None or SUB_MERCHANT_CODE.fullmatch(code) is not None
        mode = key_mode(token) if token else None
        record = None
        if token and mode is not None:
            digest, sub_code = hash_key(self._pepper, token), code if code_ok else None
            if connection is not None:
                record = await repository.find_key(await connection(), digest, sub_code)
            else:
                async with self._engine.connect() as own:
                    record = await repository.find_key(own, digest, sub_code)
        valid = (
            record is not None
            and mode is not None
            and not record.revoked
            and record.mode == mode.value
        )
        if record is not None and valid:
            await self._limiter.hit(f"key:{record.key_id}", self._key_limit)
        else:
            client = request.client.host if request.client else "unknown"
            await self._limiter.hit(f"ip:{client}", self._ip_limit)
        if token is None:
            raise AuthenticationFailed(
                "No API key provided. Send it as `Authorization: Bearer sk_test_…`."
            )
        if record is None or mode is None:
            hint = f": {key_hint(token)}" if mode is not None else ""
            raise AuthenticationFailed(f"Invalid API key provided{hint}.")
        if record.revoked:
            raise AuthenticationFailed(f"This API key has been revoked: {key_hint(token)}.")
        if not valid:
            raise AuthenticationFailed(f"Invalid API key provided: {key_hint(token)}.")
        sub_merchant = None
        if code is not None:
            if not code_ok or record.sub_merchant_id is None or not record.sub_merchant_active:
                raise InvalidSubMerchantCode(
                    f"No active sub-merchant with code {code[:64]!r} under this merchant.",
                    param=SUB_MERCHANT_HEADER,
                )
            sub_merchant = SubMerchantRef(
                id=record.sub_merchant_id,
                code=str(record.sub_merchant_code),
                name=str(record.sub_merchant_name),
            )
        self._touch(record.key_id)
        return Principal(
            key_id=record.key_id,
            mode=Mode(record.mode),
            merchant=MerchantProfile(
                id=record.merchant_id,
                name=record.merchant_name,
                logo_url=record.logo_url,
                session_expiry_minutes=record.session_expiry_minutes,
                duplicate_order_guard=record.duplicate_order_guard,
            ),
            sub_merchant=sub_merchant,
        )

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._write_touch(key_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_touch(self, key_id: str) -> None:
        try:
            async with self._engine.begin() as conn:
                await repository.touch_key(conn, key_id, datetime.now(UTC))
        except Exception:
            log.warning("could not record last use of an API key", exc_info=True)

    async def aclose(self) -> None:
        """Let pending ``last_used_at`` writes finish (shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
