"""Settings of the api service (environment, prefix ``PAGO_``; servers as in ``CommonSettings``).

Every feature's settings are a fragment of ``ApiSettings`` (the address pool's, the webhook URL
policy's), read together at start: a bad value stops the process with one line naming it, never
a 500 at the first request that needs it.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from pago.api.addresses.settings import AddressPoolSettings
from pago.api.cards.settings import CardSettings
from pago.api.oauth.settings import OAuthSettings
from pago.api.webhook_endpoints.settings import WebhookSettings
from pago.common.enums import Token
from pago.common.errors import ConfigError
from pago.common.settings import SecretSettings, describe_validation_error
from pago.common.watchlist import DEFAULT_WATCH_GRACE

# Fiat units per 1 token, a development table: close to real prices, but not authoritative.
# Production uses ``PAGO_RATE_PROVIDER=http``. The USD rows are configuration like the others;
# nothing assumes a stablecoin is worth exactly one dollar.
_DEV_FIAT_PER_TOKEN: dict[str, str] = {
    "USD": "1.00000000",
    "EUR": "0.86000000",
    "GBP": "0.76000000",
    "CNY": "7.10000000",
    "JPY": "155.00000000",
    "KRW": "1460.00000000",
    "HKD": "7.78000000",
    "SGD": "1.30000000",
    "AUD": "1.54000000",
    "CAD": "1.40000000",
    "CHF": "0.80000000",
    "NZD": "1.77000000",
    "INR": "88.70000000",
    "IDR": "16700.00000000",
    "THB": "32.40000000",
    "PHP": "58.90000000",
    "MYR": "4.15000000",
    "VND": "26300.00000000",
    "TWD": "31.20000000",
    "BRL": "5.33000000",
    "MXN": "18.40000000",
    "AED": "3.67250000",
    "SAR": "3.75000000",
    "TRY": "42.30000000",
    "ZAR": "17.30000000",
    "SEK": "9.50000000",
    "NOK": "10.10000000",
    "DKK": "6.45000000",
    "PLN": "3.66000000",
}


def default_static_rates() -> dict[str, dict[Token, Decimal]]:
    return {
        fiat: {token: Decimal(rate) for token in Token}
        for fiat, rate in _DEV_FIAT_PER_TOKEN.items()
    }


class RateProviderKind(StrEnum):
    STATIC = "static"
    HTTP = "http"


def card_settings() -> CardSettings:
    """``PAGO_CARD_*``, read with the rest: a bad value stops the process with one line."""
    try:
        return CardSettings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(CardSettings, exc)) from None


class ApiSettings(SecretSettings, AddressPoolSettings, WebhookSettings, OAuthSettings):
    """Everything the api reads; each field is ``PAGO_<FIELD>`` in the environment."""

    cards: CardSettings = Field(default_factory=card_settings, exclude=True)
    """The card orchestration's own fragment (``PAGO_CARD_*``, see ``cards.settings``)."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    access_log: bool = False
    api_metrics_port: int = Field(default=8081, ge=0, le=65535)
    """``/metrics`` (Prometheus) is served here, not on the public port; 0 picks a free port."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies trusted for ``X-Forwarded-For``/``-Proto`` (uvicorn's setting: comma-separated
    IPs or CIDRs, ``*`` for any). Set it to the ingress controller's addresses: the client IP it
    yields is what the per-IP rate limits count."""

    checkout_base_url: str = "http://localhost:8000/checkout/"
    """The hosted page's public base; a session's ``url`` is this plus its id."""
    error_doc_base_url: str | None = None
    """When set, every error's ``doc_url`` is ``<this>#<code>``."""

    # Rate limits (GCRA: a steady rate with a burst allowance), per API key and, for requests
    # without a valid key, per client IP.
    rate_limit_per_second: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    ip_rate_limit_per_second: float = Field(default=20.0, gt=0)
    ip_rate_limit_burst: int = Field(default=40, ge=1)
    public_rate_limit_per_second: float = Field(default=10.0, gt=0)
    """Per client IP on the routes without an API key: the hosted page, its QR code, assets
    and SSE stream, health probes, ``/openapi.json`` and ``/docs``."""
    public_rate_limit_burst: int = Field(default=60, ge=1)

    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    idempotency_lock_seconds: float = Field(default=10.0, gt=0)
    """How long a crashed request's lock outlives it; a live request keeps renewing it."""
    idempotency_purge_seconds: float = Field(default=600.0, gt=0)
    """How often expired ``idempotency_records`` rows are deleted."""

    rate_provider: RateProviderKind = RateProviderKind.STATIC
    static_rates: dict[str, dict[Token, Decimal]] = Field(default_factory=default_static_rates)
    """Fiat units per 1 token, e.g. ``{"EUR": {"USDT": "0.86"}}`` (JSON, decimal strings)."""
    rate_http_url: str = "https://api.coingecko.com/api/v3/simple/price"
    rate_http_api_key: SecretStr | None = None
    rate_http_timeout_seconds: float = Field(default=5.0, gt=0)
    rate_cache_seconds: int = Field(default=60, ge=1)
    rate_max_age_seconds: int = Field(default=3600, ge=1)
    """A rate older than this is refused (503) rather than used."""

    watch_grace_minutes: int = Field(default=int(DEFAULT_WATCH_GRACE.total_seconds() // 60), ge=0)
    """How long after ``expires_at`` an address stays watched and leased (late payments); an
    Underpaid extension moves both by the same amount."""

    run_outbox_relay: bool = True
    """Relay the outbox from inside the api process (else run ``python -m pago.common.outbox``)."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)

    @property
    def oauth_issuer_url(self) -> str:
        """``PAGO_OAUTH_ISSUER``, else the origin of the api's public base URL."""
        if self.oauth_issuer:
            return self.oauth_issuer
        parts = urlsplit(self.checkout_base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("checkout_base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("static_rates")
    @classmethod
    def _upper_fiat(cls, value: dict[str, dict[Token, Decimal]]) -> dict[str, dict[Token, Decimal]]:
        for fiat, row in value.items():
            for token, rate in row.items():
                if rate <= 0:
                    raise ValueError(f"rate {fiat}/{token} must be > 0")
        return {fiat.upper(): row for fiat, row in value.items()}

    @model_validator(mode="after")
    def _no_static_rates_in_production(self) -> Self:
        if self.is_production and self.rate_provider is RateProviderKind.STATIC:
            raise ValueError(
                "PAGO_RATE_PROVIDER=static (a fixed development table) is refused in production;"
                " set PAGO_RATE_PROVIDER=http"
            )
        return self
