"""Route dependencies of the card API: the caller's verified JWT, with the scopes it needs.

    from pago.api.oauth.dependencies import SessionsWrite

    @router.post("/api/v1/sessions")
    async def create(client: SessionsWrite, …) -> …:
        client.merchant_id, client.mode  # scope every query to these

or, for another scope set, ``Annotated[ClientPrincipal, Depends(require_scope(A, B))]``.
Any token failure is 401 ``authentication_failed`` with ``WWW-Authenticate: Bearer
error="invalid_token"``; a valid token without a needed scope is 403 ``insufficient_scope``.
The verified principal is kept in ``request.state.client_principal`` so a middleware that
admitted the request first (idempotency) and the route verify the token once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2

from pago.api.dependencies import get_state
from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE, ClientPrincipal

TOKEN_URL = "/oauth/token"  # noqa: S105 - a path, not a secret

_oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl=TOKEN_URL,
            scopes={
                SCOPE_SESSIONS_WRITE: "Create card checkout sessions.",
                SCOPE_SESSIONS_READ: "Read card checkout sessions.",
            },
        )
    ),
    scheme_name="OAuth2ClientCredentials",
    description="`Authorization: Bearer <JWT>` from `POST /oauth/token` (client credentials), "
    "or from a trusted external OIDC issuer.",
    auto_error=False,
)


def require_scope(*scopes: str) -> Callable[..., Awaitable[ClientPrincipal]]:
    """A dependency giving the verified client, which must hold every one of ``scopes``."""
    required = frozenset(scopes)
    # A default, not an ``Annotated`` marker: the annotation is a string (postponed), which
    # FastAPI resolves in the module's globals, where ``required`` does not exist.
    scheme = Security(_oauth2, scopes=sorted(required))

    async def client_principal(
        request: Request, _authorization: str | None = scheme
    ) -> ClientPrincipal:
        return await get_state(request).oauth.admit(request, required)

    return client_principal


ClientAuth = Annotated[ClientPrincipal, Depends(require_scope())]
"""Any valid token, whatever its scopes."""
SessionsWrite = Annotated[ClientPrincipal, Depends(require_scope(SCOPE_SESSIONS_WRITE))]
SessionsRead = Annotated[ClientPrincipal, Depends(require_scope(SCOPE_SESSIONS_READ))]
