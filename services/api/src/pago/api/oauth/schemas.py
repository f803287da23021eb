"""Bodies of the token endpoint (RFC 6749 §5.1, §5.2) and of the JWKS (RFC 7517 §5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pago.api.oauth.errors import TokenErrorCode


class TokenResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: str = Field(description="A JWT (ES256, `typ: at+jwt`).")
    token_type: str = Field(default="Bearer", examples=["Bearer"])
    expires_in: int = Field(description="Seconds until it expires.", examples=[900])
    scope: str = Field(description="The granted scopes, space-separated.")


class TokenErrorResponse(BaseModel):
    """OAuth's own error format (RFC 6749 §5.2), not Pago's envelope: OAuth clients parse it."""

    model_config = ConfigDict(frozen=True)

    error: TokenErrorCode
    error_description: str


class JsonWebKeySet(BaseModel):
    model_config = ConfigDict(frozen=True)

    keys: list[dict[str, Any]] = Field(description="Public JWKs (EC P-256, `use: sig`).")
