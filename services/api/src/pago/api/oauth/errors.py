"""The card API's bearer-token errors (RFC 6750 §3) in the api's envelope, and the token
endpoint's own errors (RFC 6749 §5.2), which keep OAuth's format.

``/oauth/token`` answers ``{"error", "error_description"}`` because every OAuth client library
parses exactly that; the resource endpoints answer Pago's ``{"error": {…}}`` envelope like the
rest of the api, and say what went wrong in ``WWW-Authenticate`` as RFC 6750 asks.
"""

from __future__ import annotations

from enum import StrEnum

from pago.api.errors import ApiError, ErrorType

REALM = "pago"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class InvalidToken(ApiError):
    """Missing, malformed, expired, not yet valid, wrongly signed, for another issuer or
    audience, or of a revoked client: 401."""

    status_code = 401
    type = ErrorType.AUTHENTICATION
    default_code = "authentication_failed"

    def __init__(self, message: str, *, missing: bool = False) -> None:
        # A request without credentials gets no error code (RFC 6750 §3.1).
        challenge = f'Bearer realm="{REALM}"'
        if not missing:
            challenge += f', error="invalid_token", error_description="{_quoted(message)}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class InsufficientScope(ApiError):
    """A valid token without the scope the operation needs: 403 (RFC 6750 §3.1), so a client
    knows that a new token with that scope helps and retrying this one does not."""

    status_code = 403
    type = ErrorType.AUTHENTICATION
    default_code = "insufficient_scope"

    def __init__(self, required: frozenset[str]) -> None:
        scope = " ".join(sorted(required))
        super().__init__(
            f"The token lacks the scope this operation needs: {scope}.",
            headers={
                "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )


class TokenErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_SCOPE = "invalid_scope"


class TokenError(Exception):
    """An RFC 6749 §5.2 error of ``POST /oauth/token``: 400, or 401 with a ``WWW-Authenticate``
    challenge for ``invalid_client`` (whichever way the client sent its credentials: one
    answer for every failed authentication tells a prober nothing)."""

    def __init__(self, error: TokenErrorCode, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = 401 if error is TokenErrorCode.INVALID_CLIENT else 400
        self.headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if error is TokenErrorCode.INVALID_CLIENT:
            self.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
