"""``Idempotency-Key`` for POSTs under ``/v1/``: Redis in front, Postgres underneath.

Rules (IronixPay's, as ARCHITECTURE.md "HTTP API" states them):

- scope: merchant (in one mode) + sub-merchant + key; the fingerprint is the method, the path
  and the canonical JSON of the body (key order and whitespace do not matter);
- the first request takes a lock; a second one with the same key gets 409
  ``request_in_progress`` (``Retry-After``) while it runs, or 409 ``idempotency_conflict`` if its
  body differs;
- a 2xx response is kept for ``ttl`` (24 h) and replayed byte for byte with
  ``Idempotency-Replayed: true``; any other outcome releases the key, because nothing was
  committed and the client may retry (with a corrected body, too);
- the lock lives ``lock_seconds`` and the request renews it while it runs, so only a crashed
  process's lock lapses;
- Redis unreachable → 503 ``service_unavailable``: no request carrying a key runs without its
  lock.

Durability: the 2xx response is also written to ``idempotency_records`` in the request's own
transaction (claimed by its first statement, completed just before the commit), so a retry
after Redis lost the key (restart, failover, eviction, a lapsed lock) finds the record in
Postgres and replays it; a concurrent duplicate that slipped past a lost lock waits on the
claim and then answers the winner's response — never a second session. A request that uses no
transaction of its own (resolving a payment exception, idempotent by its state) gets its
record written right after. Routes that return a secret mark fields to redact
(``request.state.idempotency_redact``): the stored and replayed copy never holds the secret.

The middleware buffers the inner response, commits, stores, and only then sends it.

The card API (``POST /api/v1/sessions``, OAuth): the same rules with the verified client as
the caller — scope merchant + mode + client (``oauth:<client id>`` where an API key's
sub-merchant goes). Without the header the route itself answers 400 ``parameter_missing``
(the key is required there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pago.api.auth.principal import Principal
from pago.api.errors import (
    ApiError,
    IdempotencyConflict,
    InternalError,
    InvalidRequest,
    RequestInProgress,
    ServiceUnavailable,
    error_response,
)
from pago.api.idempotency.durable import (
    DurableClaim,
    DurableStore,
    OpenTransaction,
    StoredReplay,
    redact,
)
from pago.api.idempotency.repository import RecordScope, StoredRecord
from pago.api.oauth.principal import ClientPrincipal

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
MAX_KEY_LENGTH = 255

# KEYS[1] record; ARGV fingerprint, token, lock ms. Returns {"acquired"} or the record.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'acquired'}
end
local v = redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'ctype', 'body')
return {v[1] or '', v[2] or '', v[3] or '', v[4] or '', v[5] or ''}
"""
# KEYS[1]; ARGV token, status, content type, body, ttl ms.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'ctype', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
_RENEW = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Acquired:
    token: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Method, path and canonical JSON (sorted keys, no whitespace); raw bytes if not JSON."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _caller(principal: Principal | ClientPrincipal) -> tuple[str, str, str | None]:
    """(merchant, mode, sub-scope): an API key's sub-merchant, or the OAuth client."""
    if isinstance(principal, ClientPrincipal):
        return principal.merchant_id, principal.mode.value, f"oauth:{principal.client_id}"
    sub = principal.sub_merchant.id if principal.sub_merchant else None
    return principal.merchant.id, principal.mode.value, sub


def record_key(principal: Principal | ClientPrincipal, key: str) -> str:
    merchant, mode, sub = _caller(principal)
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return f"pago:idem:{mode}:{merchant}:{sub or '-'}:{digest}"


class IdempotencyStore:
    def __init__(self, redis: Redis, *, ttl_seconds: int, lock_seconds: float) -> None:
        self._redis = redis
        self.ttl_ms = ttl_seconds * 1000
        self.lock_ms = max(1, round(lock_seconds * 1000))
        self._begin = redis.register_script(_BEGIN)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    async def begin(self, key: str, fp: str) -> Acquired | StoredResponse:
        """Take the key, or return the response stored for it; raise on conflict or in-progress."""
        token = secrets.token_hex(16)
        result = await self._begin(keys=[key], args=[fp, token, self.lock_ms])
        if result[0] == b"acquired":
            return Acquired(token)
        state, stored_fp, status, ctype, body = (bytes(v) for v in result)
        if stored_fp.decode() != fp:
            raise _conflict()
        if state != b"done":
            raise _in_progress()
        return StoredResponse(int(status), ctype.decode(), body)

    async def complete(self, key: str, token: str, response: StoredResponse) -> bool:
        done = await self._complete(
            keys=[key],
            args=[token, response.status, response.content_type, response.body, self.ttl_ms],
        )
        return bool(done)

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])

    async def renew(self, key: str, token: str) -> bool:
        return bool(await self._renew(keys=[key], args=[token, self.lock_ms]))


Admit = Callable[[Request], Awaitable[Principal]]
OAuthAdmit = Callable[[Request], Awaitable[ClientPrincipal]]

CLAIM_STATE = "idempotency_claim"
"""``scope["state"]`` key of the request's :class:`DurableClaim` (read by the transaction)."""
REDACT_STATE = "idempotency_redact"
"""``scope["state"]`` key of the response fields a route keeps out of the stored copy."""


def durable_scope(principal: Principal | ClientPrincipal, key: str) -> RecordScope:
    merchant, mode, sub = _caller(principal)
    return RecordScope(merchant, mode, sub or "", key)


def _conflict() -> IdempotencyConflict:
    return IdempotencyConflict(
        "This Idempotency-Key was used with a different request (method, path or body)."
        " Use a new key for a new request.",
        param=HEADER,
    )


def _in_progress() -> RequestInProgress:
    return RequestInProgress(
        "A request with this Idempotency-Key is still running; retry shortly.", retry_after=1
    )


@dataclass(slots=True)
class _Keyed:
    """One keyed request's handles: Redis record and token, the durable claim."""

    store: IdempotencyStore
    rkey: str
    token: str
    claim: DurableClaim


class IdempotencyMiddleware:
    """Applies ``IdempotencyStore`` and ``DurableStore`` to POST requests under ``/v1/`` that
    carry the header.

    It admits the request first (rate limit and API key) because the scope is the merchant;
    the principal is left in ``request.state.principal`` so the endpoint does not admit twice.
    POSTs to ``oauth_paths`` are admitted with ``oauth_admit`` (the bearer JWT) instead, which
    leaves the verified client in the request state the same way.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Callable[[], IdempotencyStore],
        durable: Callable[[], DurableStore],
        admit: Callable[[], Admit],
        doc_base_url: str | None,
        oauth_admit: Callable[[], OAuthAdmit] | None = None,
        oauth_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self._store = store
        self._durable = durable
        self._admit = admit
        self._oauth_admit = oauth_admit
        self._oauth_paths = oauth_paths
        self._doc_base_url = doc_base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        oauth = self._oauth_admit is not None and path in self._oauth_paths
        if not oauth and not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get(HEADER.lower())
        if key is None:
            await self.app(scope, receive, send)
            return
        store = self._store()
        try:
            state = scope.setdefault("state", {})
            principal: Principal | ClientPrincipal
            if oauth and self._oauth_admit is not None:
                principal = await self._oauth_admit()(Request(scope))
            else:
                principal = await self._admit()(Request(scope))
                state["principal"] = principal
            if not key or len(key) > MAX_KEY_LENGTH:
                raise InvalidRequest(
                    f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters long.", param=HEADER
                )
            body = await _read_body(receive)
            fp = fingerprint("POST", scope["path"], body)
            rkey = record_key(principal, key)
            try:
                outcome = await store.begin(rkey, fp)
            except RedisError:
                log.warning("idempotency store unavailable (Redis)", exc_info=True)
                raise ServiceUnavailable(
                    "Idempotency keys cannot be checked right now; retry shortly.", retry_after=1
                ) from None
        except ApiError as error:
            await error_response(error, self._doc_base_url)(scope, receive, send)
            return
        if isinstance(outcome, StoredResponse):
            await _send_stored(outcome, send)
            return
        durable = self._durable()
        keyed = _Keyed(store, rkey, outcome.token, durable.claim(durable_scope(principal, key), fp))
        # Redis had nothing: the key may still be known to Postgres (Redis lost it).
        try:
            record = await durable.find(keyed.claim.scope)
        except SQLAlchemyError:
            log.warning("idempotency records unavailable (Postgres)", exc_info=True)
            unavailable = ServiceUnavailable(
                "Idempotency keys cannot be checked right now; retry shortly.", retry_after=1
            )
            await self._give_up(keyed, unavailable, scope, receive, send)
            return
        if record is not None:
            await self._answer_recorded(keyed, record, scope, receive, send)
            return
        scope["state"][CLAIM_STATE] = keyed.claim
        await self._run(scope, _replay(body, receive), send, keyed, durable)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, keyed: _Keyed, durable: DurableStore
    ) -> None:
        messages: list[Message] = []

        async def buffer(message: Message) -> None:
            messages.append(message)

        renewer = asyncio.create_task(self._keep_lock(keyed.store, keyed.rkey, keyed.token))
        handed: OpenTransaction | None = None
        try:
            try:
                await self.app(scope, receive, buffer)
            finally:
                renewer.cancel()
                handed, keyed.claim.handed_over = keyed.claim.handed_over, None
            start = next((m for m in messages if m["type"] == "http.response.start"), None)
            status = int(start["status"]) if start else 500
            stored: StoredResponse | None = None
            if 200 <= status < 300 and start is not None:
                body = b"".join(
                    m.get("body", b"") for m in messages if m["type"] == "http.response.body"
                )
                ctype = Headers(raw=start.get("headers", [])).get(
                    "content-type", "application/json"
                )
                redact_fields = scope["state"].get(REDACT_STATE)
                if redact_fields:
                    body = redact(body, tuple(redact_fields))
                stored = StoredResponse(status, ctype, body)
            if handed is not None:
                conn = await handed.connection()
                if stored is not None:
                    await keyed.claim.complete(
                        conn, stored.status, stored.content_type, stored.body
                    )
                else:
                    await keyed.claim.drop(conn)
                done, handed = handed, None
                await done.finish(None)  # the work and its record commit together
            elif stored is not None and not keyed.claim.claimed:
                await self._store_after(durable, keyed, stored)
        except StoredReplay as replay:
            await self._rollback(handed)
            if replay.record is None:
                await self._give_up(keyed, _in_progress(), scope, receive, send)
            else:
                await self._answer_recorded(keyed, replay.record, scope, receive, send)
            return
        except BaseException as exc:
            await self._rollback(handed, exc)
            with contextlib.suppress(RedisError):
                await keyed.store.release(keyed.rkey, keyed.token)
            if isinstance(exc, SQLAlchemyError):
                log.error("could not commit an idempotent request", exc_info=True)
                error = InternalError("An unexpected error occurred; nothing was committed.")
                await error_response(error, self._doc_base_url)(scope, receive, send)
                return
            raise
        await self._finish_redis(keyed, stored)
        for message in messages:
            await send(message)

    async def _store_after(
        self, durable: DurableStore, keyed: _Keyed, stored: StoredResponse
    ) -> None:
        try:
            await durable.store(
                keyed.claim.scope,
                keyed.claim.fingerprint,
                stored.status,
                stored.content_type,
                stored.body,
            )
        except SQLAlchemyError:
            # Only routes idempotent by their own state get here: a retry is safe anyway.
            log.warning("could not record an idempotent response (Postgres)", exc_info=True)

    async def _finish_redis(self, keyed: _Keyed, stored: StoredResponse | None) -> None:
        try:
            if stored is not None:
                if not await keyed.store.complete(keyed.rkey, keyed.token, stored):
                    log.warning("idempotency lock was lost before the response was stored")
            else:
                await keyed.store.release(keyed.rkey, keyed.token)
        except RedisError:
            # Committed and recorded in Postgres: a retry finds it there.
            log.warning("could not record an idempotent response (Redis)", exc_info=True)

    async def _answer_recorded(
        self, keyed: _Keyed, record: StoredRecord, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer what Postgres holds for the key (and put it back in Redis, the fast path)."""
        if record.fingerprint != keyed.claim.fingerprint:
            await self._give_up(keyed, _conflict(), scope, receive, send)
            return
        stored = StoredResponse(record.status_code, record.content_type, record.body)
        await self._finish_redis(keyed, stored)
        await _send_stored(stored, send)

    async def _give_up(
        self, keyed: _Keyed, error: ApiError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        with contextlib.suppress(RedisError):
            await keyed.store.release(keyed.rkey, keyed.token)
        await error_response(error, self._doc_base_url)(scope, receive, send)

    @staticmethod
    async def _rollback(handed: OpenTransaction | None, exc: BaseException | None = None) -> None:
        if handed is not None:
            await handed.finish(exc or RuntimeError("rolled back"))

    async def _keep_lock(self, store: IdempotencyStore, rkey: str, token: str) -> None:
        interval = store.lock_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                if not await store.renew(rkey, token):
                    log.error("idempotency lock lapsed while its request was running")
                    return
            except RedisError:
                log.warning("could not renew an idempotency lock (Redis)", exc_info=True)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_stored(response: StoredResponse, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (b"content-type", response.content_type.encode("latin-1")),
                (b"content-length", str(len(response.body)).encode()),
                (REPLAYED_HEADER.lower().encode(), b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
