"""Request-scoped dependencies: the process state, the transaction, the caller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.api.auth.principal import Principal
from pago.api.idempotency import CLAIM_STATE, MAX_KEY_LENGTH, REDACT_STATE, DurableClaim
from pago.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from pago.api.state import ApiState


def get_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.pago)


State = Annotated[ApiState, Depends(get_state)]


class RequestTransaction:
    """The request's one transaction, begun on first use.

    Committed when the endpoint returns and before the response is sent (a function-scoped
    dependency), rolled back if anything raised. A request refused before it needs the
    database (no key, a malformed one, a replay) never takes a pooled connection.

    A request with an ``Idempotency-Key`` carries a :class:`DurableClaim`: its first statement
    claims the key (or raises ``StoredReplay`` when a concurrent request recorded it first),
    and the open transaction is handed to the idempotency middleware, which stores the
    response in it and commits — before the response is sent, as without a key.
    """

    def __init__(self, engine: AsyncEngine, claim: DurableClaim | None = None) -> None:
        self._engine = engine
        self._claim = claim
        self._stack = contextlib.AsyncExitStack()
        self._conn: AsyncConnection | None = None

    @property
    def begun(self) -> bool:
        return self._conn is not None

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._engine.begin())
            if self._claim is not None:
                await self._claim.take(self._conn)
        return self._conn

    async def finish(self, exc: BaseException | None) -> None:
        """Commit (``exc`` None) or roll back what was begun, and return the connection."""
        self._conn = None
        if exc is None:
            await self._stack.aclose()
        else:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)


async def transaction(request: Request) -> AsyncIterator[RequestTransaction]:
    claim = getattr(request.state, CLAIM_STATE, None)
    claim = claim if isinstance(claim, DurableClaim) else None
    tx = RequestTransaction(get_state(request).engine, claim)
    try:
        yield tx
    except BaseException as exc:
        await tx.finish(exc)
        raise
    if claim is not None and claim.claimed and tx.begun:
        claim.handed_over = tx  # the middleware records the response, then commits
    else:
        await tx.finish(None)


Tx = Annotated[RequestTransaction, Depends(transaction, scope="function")]


async def connection(tx: Tx) -> AsyncConnection:
    return await tx.connection()


Transaction = Annotated[AsyncConnection, Depends(connection)]
"""The request transaction's connection (for endpoints that use the database)."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer sk_test_…` or `sk_live_…`. The key's mode selects "
    "test or live sessions.",
)


async def current_principal(
    request: Request,
    tx: Tx,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    _sub_merchant: Annotated[
        str | None,
        Header(
            alias="X-Sub-Merchant-Code",
            description="Act as this active sub-merchant of the key's merchant: create its "
            "sessions and see only them. Unknown → 400 `invalid_sub_merchant_code`.",
        ),
    ] = None,
) -> Principal:
    """Rate limit, API key and sub-merchant (see ``Authenticator.admit``); done once per request
    — the idempotency middleware may already have done it."""
    admitted = getattr(request.state, "principal", None)
    if isinstance(admitted, Principal):
        return admitted
    return await get_state(request).authenticator.admit(request, tx.connection)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Makes the POST safe to retry for 24 h: the same key and body replay the "
        "stored response (`Idempotency-Replayed: true`); another body → 409 "
        "`idempotency_conflict`; still running → 409 `request_in_progress` with `Retry-After`.",
    ),
]


def redact_secret(request: Request) -> None:
    """Route dependency: the response's ``secret`` stays out of the stored idempotent copy
    (a replay shows it redacted; the secret is shown once)."""
    setattr(request.state, REDACT_STATE, ("secret",))
