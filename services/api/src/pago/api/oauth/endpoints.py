"""``POST /oauth/token`` (client credentials) and ``GET /.well-known/jwks.json``.

Both are public routes: ``PublicRateLimitMiddleware`` limits them per client IP, and failed
client authentications also count against the IP's bucket for bad credentials.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from pago.api.dependencies import State
from pago.api.oauth.errors import TokenError, TokenErrorCode
from pago.api.oauth.schemas import JsonWebKeySet, TokenErrorResponse, TokenResponse

router = APIRouter(tags=["OAuth"])

_FORM = "application/x-www-form-urlencoded"
_PARAMETERS = frozenset({"grant_type", "scope", "client_id", "client_secret"})
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise TokenError(TokenErrorCode.INVALID_REQUEST, f"The body must be {_FORM}.")
    try:
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise TokenError(TokenErrorCode.INVALID_REQUEST, "The body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:
            continue  # RFC 6749 §3.1: unrecognized parameters are ignored
        if name in form:  # §3.2: a parameter must not be repeated
            raise TokenError(TokenErrorCode.INVALID_REQUEST, f"{name} is repeated.")
        form[name] = value
    return form


@router.post(
    "/oauth/token",
    operation_id="oauth_token",
    summary="Get an access token (OAuth 2.0 client credentials)",
    description="RFC 6749 §4.4. Authenticate with HTTP Basic (`client_id:client_secret`) or "
    "with `client_id` and `client_secret` in the form; `scope` (space-separated) defaults to "
    "every scope the client may have. Errors use OAuth's format (RFC 6749 §5.2), not Pago's "
    "envelope.",
    response_model=TokenResponse,
    responses={
        400: {"model": TokenErrorResponse, "description": "RFC 6749 §5.2 error."},
        401: {"model": TokenErrorResponse, "description": "`invalid_client`."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string"},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> JSONResponse:
    form = await _form(request)
    client = request.client.host if request.client else "unknown"
    issued = await state.oauth.issue(form, authorization, client)
    body = TokenResponse(
        access_token=issued.access_token,
        token_type=issued.token_type,
        expires_in=issued.expires_in,
        scope=issued.scope,
    )
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


@router.get(
    "/.well-known/jwks.json",
    operation_id="oauth_jwks",
    summary="Pago's token-signing public keys",
    description="The current key, its scheduled successor and retired keys whose tokens may "
    "still be live. Cacheable for `PAGO_OAUTH_JWKS_MAX_AGE_SECONDS`.",
    response_model=JsonWebKeySet,
    responses={
        200: {
            "content": {
                "application/jwk-set+json": {
                    "schema": {"$ref": "#/components/schemas/JsonWebKeySet"}
                }
            }
        }
    },
)
async def jwks(state: State) -> JSONResponse:
    max_age = state.settings.oauth_jwks_max_age_seconds
    return JSONResponse(
        await state.oauth.jwks(),
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )


async def _on_token_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, TokenError):  # registered for TokenError only
        raise exc
    body = TokenErrorResponse(error=exc.error, error_description=exc.description)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=exc.status_code, headers=exc.headers
    )


def install(app: FastAPI) -> None:
    """The routes, and the handler that renders ``TokenError`` in OAuth's format."""
    app.include_router(router)
    app.add_exception_handler(TokenError, _on_token_error)
