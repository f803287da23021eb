"""Pago as an OAuth 2.0 authorization server for the card API, and the verification of the
bearer tokens the card endpoints receive (Pago's own, or a trusted external issuer's).

Pago's tokens are self-contained (RFC 9068 shape, ``typ: at+jwt``): verifying one reads no
database row, so revoking a client stops new tokens at once and lets issued ones live out
their lifetime (``PAGO_OAUTH_TOKEN_TTL_SECONDS``, 15 minutes by default). An external
issuer's token names no Pago merchant, so it is mapped to a registered client by
``(iss, sub)`` on every request (one index probe), and a revoked client is refused at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from pago.api.oauth import repository
from pago.api.oauth.credentials import SIGNING_ALGORITHM, hash_client_secret, is_client_secret
from pago.api.oauth.errors import (
    InsufficientScope,
    InvalidToken,
    TokenError,
    TokenErrorCode,
)
from pago.api.oauth.external import ExternalIssuers
from pago.api.oauth.keyring import Keyring
from pago.api.oauth.principal import ClientPrincipal
from pago.api.ratelimit import Limit, RateLimiter
from pago.common.enums import Mode

log = logging.getLogger(__name__)

GRANT_CLIENT_CREDENTIALS = "client_credentials"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type
"""JWT ``typ`` of an access token (RFC 9068 §2.1): an ID token cannot pass for one."""
CLAIM_MERCHANT = "pago_merchant_id"
CLAIM_MODE = "pago_mode"
PRINCIPAL_STATE = "client_principal"
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    issuer: str
    audience: str
    ttl_seconds: int
    leeway_seconds: int


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """``client_id:client_secret`` of an ``Authorization: Basic`` header, each part
    form-urlencoded first (RFC 6749 §2.3.1); None for another scheme."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TokenError(
            TokenErrorCode.INVALID_CLIENT, "Malformed HTTP Basic credentials."
        ) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise TokenError(TokenErrorCode.INVALID_CLIENT, "Malformed HTTP Basic credentials.")
    return unquote_plus(client_id), unquote_plus(secret)


class OAuthService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        keyring: Keyring,
        external: ExternalIssuers,
        policy: TokenPolicy,
        pepper: bytes,
        limiter: RateLimiter,
        client_limit: Limit,
        ip_limit: Limit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.keyring = keyring
        self._external = external
        self._policy = policy
        self._pepper = pepper
        self._limiter = limiter
        self._client_limit = client_limit
        self._ip_limit = ip_limit
        self._clock = clock

    # --- the token endpoint -----------------------------------------------------------------

    async def issue(
        self, form: Mapping[str, str], authorization: str | None, client_ip: str
    ) -> IssuedToken:
        """A token for the client credentials grant, or ``TokenError`` (RFC 6749 §5.2)."""
        grant = form.get("grant_type")
        if not grant:
            raise TokenError(TokenErrorCode.INVALID_REQUEST, "grant_type is required.")
        if grant != GRANT_CLIENT_CREDENTIALS:
            raise TokenError(
                TokenErrorCode.UNSUPPORTED_GRANT_TYPE,
                "Only the client_credentials grant is supported.",
            )
        client_id, secret = self._credentials(form, authorization)
        record = None
        if is_client_secret(secret):
            async with self._engine.connect() as conn:
                record = await repository.client_by_secret(
                    conn, hash_client_secret(self._pepper, secret)
                )
        if record is None or record.client_id != client_id or record.revoked:
            # Failed authentications count against the caller's address, like bad API keys.
            await self._limiter.hit(f"ip:{client_ip}", self._ip_limit)
            raise TokenError(TokenErrorCode.INVALID_CLIENT, "Client authentication failed.")
        scopes = self._granted(form.get("scope"), record.scopes)
        signer = await self.keyring.signer()
        now = int(self._clock())
        scope = " ".join(scopes)
        claims: dict[str, object] = {
            "iss": self._policy.issuer,
            "sub": record.client_id,
            "client_id": record.client_id,
            "aud": self._policy.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._policy.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            CLAIM_MERCHANT: record.merchant_id,
            CLAIM_MODE: record.mode,
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": signer.kid, "typ": TOKEN_TYPE}
        token = jwt.encode(header, claims, signer.key, algorithms=[SIGNING_ALGORITHM])
        log.info(
            "oauth token issued",
            extra={"client_id": record.client_id, "kid": signer.kid, "scope": claims["scope"]},
        )
        return IssuedToken(access_token=token, expires_in=self._policy.ttl_seconds, scope=scope)

    @staticmethod
    def _credentials(form: Mapping[str, str], authorization: str | None) -> tuple[str, str]:
        basic = _basic_credentials(authorization) if authorization else None
        posted_id, posted_secret = form.get("client_id"), form.get("client_secret")
        if basic is not None:
            if posted_secret is not None:
                raise TokenError(
                    TokenErrorCode.INVALID_REQUEST,
                    "Use one client authentication method, not HTTP Basic and a form secret.",
                )
            if posted_id is not None and posted_id != basic[0]:
                raise TokenError(
                    TokenErrorCode.INVALID_REQUEST, "client_id differs from the Basic one."
                )
            return basic
        if not posted_id or not posted_secret:
            raise TokenError(
                TokenErrorCode.INVALID_CLIENT,
                "Client authentication is required (HTTP Basic, or client_id and "
                "client_secret in the form).",
            )
        return posted_id, posted_secret

    @staticmethod
    def _granted(requested: str | None, allowed: tuple[str, ...]) -> list[str]:
        if requested is None:
            return sorted(allowed)
        asked = set(requested.split(" ")) - {""}
        if not asked:
            raise TokenError(TokenErrorCode.INVALID_SCOPE, "scope is empty.")
        extra = asked - set(allowed)
        if extra:
            raise TokenError(
                TokenErrorCode.INVALID_SCOPE,
                f"Not allowed for this client: {' '.join(sorted(extra))}.",
            )
        return sorted(asked)

    async def jwks(self) -> dict[str, Any]:
        return await self.keyring.jwks()

    async def rotate_now(self) -> str:
        return await self.keyring.rotate_now()

    # --- verification ----------------------------------------------------------------------

    async def admit(self, request: Request, required: frozenset[str]) -> ClientPrincipal:
        """The request's verified client (once per request), limited per client, or per IP
        when the token is refused; ``InvalidToken`` or ``InsufficientScope``."""
        principal = getattr(request.state, PRINCIPAL_STATE, None)
        if not isinstance(principal, ClientPrincipal):
            try:
                principal = await self.verify(_bearer(request))
            except InvalidToken:
                await self._limiter.hit(f"ip:{_client_ip(request)}", self._ip_limit)
                raise
            await self._limiter.hit(f"client:{principal.client_id}", self._client_limit)
            setattr(request.state, PRINCIPAL_STATE, principal)
        if not required <= principal.scopes:
            raise InsufficientScope(required - principal.scopes)
        return principal

    async def verify(self, token: str | None) -> ClientPrincipal:
        """The client a bearer token proves, or ``InvalidToken``. Never logs the token."""
        if token is None:
            raise InvalidToken(
                "No bearer token. Send `Authorization: Bearer <JWT>` (from POST /oauth/token).",
                missing=True,
            )
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("The token is too long.")
        try:
            compact = jws.extract_compact(token.encode())
            header = compact.headers()
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError):
            raise InvalidToken("The token is not a well-formed JWT.") from None
        if not isinstance(unverified, dict):
            raise InvalidToken("The token is not a well-formed JWT.")
        issuer = unverified.get("iss")
        kid = header.get("kid")
        if issuer == self._policy.issuer:
            return await self._verify_own(token, header, kid)
        trusted = self._external.trusted(issuer) if isinstance(issuer, str) else None
        if trusted is None or not isinstance(issuer, str):
            raise InvalidToken("The token's issuer is not trusted.")
        keys = await self._external.key_set(issuer, kid if isinstance(kid, str) else None)
        claims = self._decode(
            token, keys, list(trusted.algorithms), issuer=issuer, audience=trusted.audience
        )
        async with self._engine.connect() as conn:
            record = await repository.client_by_identity(conn, issuer, str(claims["sub"]))
        if record is None or record.revoked:
            raise InvalidToken("No active client is registered for this token's subject.")
        scopes = frozenset(record.scopes)
        carried = claims.get("scope", claims.get("scp"))
        if isinstance(carried, str):
            scopes &= frozenset(carried.split())
        elif isinstance(carried, list):
            scopes &= frozenset(str(s) for s in carried)
        return ClientPrincipal(
            client_id=record.client_id,
            merchant_id=record.merchant_id,
            mode=Mode(record.mode),
            scopes=scopes,
            issuer=issuer,
        )

    async def _verify_own(
        self, token: str, header: Mapping[str, Any], kid: object
    ) -> ClientPrincipal:
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("The token is not an access token.")
        key = await self.keyring.verifying_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("The token was not signed by a current Pago key.")
        claims = self._decode(
            token,
            key,
            [SIGNING_ALGORITHM],
            issuer=self._policy.issuer,
            audience=self._policy.audience,
        )
        merchant, mode, scope = (
            claims.get(CLAIM_MERCHANT),
            claims.get(CLAIM_MODE),
            claims.get("scope"),
        )
        if not isinstance(merchant, str) or mode not in {m.value for m in Mode}:
            raise InvalidToken("The token names no merchant and mode.")
        return ClientPrincipal(
            client_id=str(claims["sub"]),
            merchant_id=merchant,
            mode=Mode(str(mode)),
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            issuer=self._policy.issuer,
        )

    def _decode(
        self,
        token: str,
        key: ECKey | KeySet,
        algorithms: list[str],
        *,
        issuer: str,
        audience: str,
    ) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, key, algorithms=algorithms)
        except JoseError:
            raise InvalidToken("The token's signature does not verify.") from None
        registry = JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=self._policy.leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(_claim_message(exc)) from None
        return dict(decoded.claims)


def _claim_message(exc: JoseError) -> str:
    if exc.error == "expired_token":
        return "The token has expired."
    text = str(exc.description or exc.error).rstrip(".")
    return text + "." if text.startswith("The token") else f"The token is not valid: {text}."


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()
