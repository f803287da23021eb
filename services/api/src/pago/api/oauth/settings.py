"""The card API's OAuth settings, a fragment of ``ApiSettings`` (prefix ``PAGO_``).

Read with the rest of the api's settings at start: a bad value (a trusted issuer without a JWKS
URL, a TTL out of range, no encryption secret in production) stops the process with one line.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pago.common.settings import Environment

DEV_ONLY_KEY_ENCRYPTION_SECRET = "pago-dev-only-oauth-key-secret-not-for-production"  # noqa: S105

EXTERNAL_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
"""What an external issuer may sign with (asymmetric only: ``none`` and HS* never)."""


class TrustedIssuer(BaseModel):
    """One external OIDC issuer whose tokens the card API accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jwks_url: str = Field(pattern=r"^https?://")
    audience: str = Field(min_length=1)
    """The ``aud`` its tokens must carry for Pago."""
    algorithms: tuple[str, ...] = ("RS256", "ES256")

    @model_validator(mode="after")
    def _asymmetric(self) -> Self:
        bad = [a for a in self.algorithms if a not in EXTERNAL_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(f"algorithms must be among {', '.join(EXTERNAL_ALGORITHMS)}")
        return self


class OAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGO_", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    oauth_issuer: str | None = None
    """``iss`` of Pago's tokens. Unset: the origin of ``PAGO_CHECKOUT_BASE_URL`` (the api's
    public base)."""
    oauth_audience: str = Field(default="pago-card-api", min_length=1)
    oauth_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    oauth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    oauth_key_rotation_days: float = Field(default=30, gt=0, le=366)
    oauth_key_encryption_secret: SecretStr | None = None
    """Encrypts the signing keys' private halves at rest (AES-256-GCM under an HKDF of it)."""
    oauth_jwks_max_age_seconds: int = Field(default=300, ge=0, le=86_400)
    """``Cache-Control: max-age`` of ``/.well-known/jwks.json``. A scheduled rotation publishes
    the new key this long before it signs, so a verifier's cached copy already holds it."""
    oauth_trusted_issuers: dict[str, TrustedIssuer] = Field(default_factory=dict)
    """JSON: ``{"https://issuer.example": {"jwks_url": "…", "audience": "…"}}``."""
    oauth_external_jwks_ttl_seconds: float = Field(default=600, gt=0)
    """How long an external issuer's JWKS is used before it is fetched again."""
    oauth_external_jwks_min_refetch_seconds: float = Field(default=30, ge=0)
    """An unknown ``kid`` refetches the JWKS at most this often per issuer (random kids must not
    turn Pago into a load generator against the issuer)."""
    oauth_external_http_timeout_seconds: float = Field(default=5, gt=0)

    @model_validator(mode="after")
    def _oauth_secret(self) -> Self:
        if self.oauth_key_encryption_secret is None:
            if self.env is Environment.PRODUCTION:
                raise ValueError("PAGO_OAUTH_KEY_ENCRYPTION_SECRET is required in production")
            object.__setattr__(
                self, "oauth_key_encryption_secret", SecretStr(DEV_ONLY_KEY_ENCRYPTION_SECRET)
            )
        elif len(self.oauth_key_encryption_secret.get_secret_value()) < 32:
            raise ValueError("PAGO_OAUTH_KEY_ENCRYPTION_SECRET must be at least 32 characters")
        if self.oauth_issuer in self.oauth_trusted_issuers:
            raise ValueError("PAGO_OAUTH_ISSUER cannot also be a trusted external issuer")
        return self

    @property
    def oauth_encryption_secret(self) -> bytes:
        secret = self.oauth_key_encryption_secret
        if secret is None:  # the validator fills it in or refuses
            raise ValueError("PAGO_OAUTH_KEY_ENCRYPTION_SECRET is not set")
        return secret.get_secret_value().encode()
