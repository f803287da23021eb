"""Card orchestration settings (environment, prefix ``PAGO_CARD_``): providers, fees, routing.

A self-contained fragment: the api reads it once at start beside ``ApiSettings`` (for example
``cards: CardSettings = Field(default_factory=CardSettings)``), so a bad value stops the
process with one line naming it.

- ``PAGO_CARD_ENABLED_PROVIDERS``: comma-separated (``stripe,adyen,paypal``); none by default.
  Each enabled provider needs its credentials (``PAGO_CARD_STRIPE_API_KEY`` …): a missing one
  is an error naming the variable, never a 401 from the provider at the first payment.
- ``PAGO_CARD_FEES``: JSON, provider → ``{"percent": "2.9", "fixed": {"AUD": 30}}``; the percent
  of the total as a JSON string or number (parsed as ``Decimal``, never through ``float``), the
  fixed fee per currency in minor units (an integer). A provider without one scores a neutral
  cost.
- ``PAGO_CARD_CAPABILITIES``: JSON, provider → any of ``currencies`` (list), ``countries``
  (list, or ``null`` for any), ``min_amount`` / ``max_amount`` (currency → minor units): each
  key given replaces what the adapter declares for that provider account.
- ``PAGO_CARD_WEIGHT_CONVERSION`` / ``_AVAILABILITY`` / ``_COST`` / ``_LATENCY``: the scorer's
  weights (decimal strings), summing to exactly 1.
- ``PAGO_CARD_BREAKER_*``: the circuit breaker (``pago.api.cards.routing.health``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pago.api.cards.providers.base import Capabilities
from pago.api.cards.routing.health import BreakerConfig
from pago.api.cards.routing.model import FeeSchedule, Weights
from pago.common.enums import CardProvider

_CREDENTIALS: dict[CardProvider, tuple[str, ...]] = {
    CardProvider.STRIPE: ("stripe_api_key", "stripe_webhook_secret"),
    CardProvider.ADYEN: ("adyen_api_key", "adyen_merchant_account", "adyen_hmac_key"),
    CardProvider.PAYPAL: ("paypal_client_id", "paypal_client_secret", "paypal_webhook_id"),
}
_WEIGHTS = Weights()
_BREAKER = BreakerConfig()


class FeeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    percent: Decimal = Field(ge=0, le=100)
    fixed: dict[str, Annotated[int, Field(ge=0, strict=True)]] = Field(default_factory=dict)

    @field_validator("percent", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError("give the percent as a decimal string, not a float")
        return value

    @field_validator("fixed")
    @classmethod
    def _currency_codes(cls, value: dict[str, int]) -> dict[str, int]:
        return {_currency(code): amount for code, amount in value.items()}

    def schedule(self) -> FeeSchedule:
        return FeeSchedule(self.percent, dict(self.fixed))


class CapabilityOverride(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    currencies: list[str] | None = None
    countries: list[str] | None = None
    min_amount: dict[str, Annotated[int, Field(ge=0, strict=True)]] | None = None
    max_amount: dict[str, Annotated[int, Field(ge=0, strict=True)]] | None = None

    @model_validator(mode="after")
    def _codes(self) -> Self:
        for code in (*(self.currencies or ()), *(self.min_amount or {}), *(self.max_amount or {})):
            _currency(code)
        for code in self.countries or ():
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return self

    def apply(self, declared: Capabilities) -> Capabilities:
        """``declared`` (the adapter's) with every key this override gives replaced."""
        caps = declared
        if self.currencies is not None:
            caps = replace(caps, currencies=frozenset(self.currencies))
        if "countries" in self.model_fields_set:
            countries = self.countries
            caps = replace(caps, countries=None if countries is None else frozenset(countries))
        if self.min_amount is not None:
            caps = replace(caps, min_amount=dict(self.min_amount))
        if self.max_amount is not None:
            caps = replace(caps, max_amount=dict(self.max_amount))
        return caps


def _currency(code: str) -> str:
    if len(code) != 3 or not code.isalpha() or not code.isupper():
        raise ValueError(f"{code!r} is not an ISO 4217 alphabetic currency code")
    return code


def _exact_json(value: object) -> object:
    """A JSON string parsed without ``float`` (numbers with a point become ``Decimal``)."""
    if isinstance(value, str | bytes):
        return json.loads(value, parse_float=Decimal)
    return value


class CardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGO_CARD_", extra="ignore", frozen=True)

    enabled_providers: Annotated[list[CardProvider], NoDecode] = Field(default_factory=list)
    """Providers routing may choose, comma-separated; their order does not matter."""

    stripe_base_url: str = "https://api.stripe.com"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    """``whsec_…``: verifies ``Stripe-Signature``."""
    adyen_base_url: str = "https://checkout-test.adyen.com"
    adyen_api_key: SecretStr | None = None
    adyen_merchant_account: str | None = None
    adyen_hmac_key: SecretStr | None = None
    """Hex: verifies ``additionalData.hmacSignature`` of notifications."""
    paypal_base_url: str = "https://api-m.sandbox.paypal.com"
    paypal_client_id: str | None = None
    paypal_client_secret: SecretStr | None = None
    paypal_webhook_id: str | None = None
    """The webhook's id at PayPal, which ``verify-webhook-signature`` needs."""

    fees: Annotated[dict[CardProvider, FeeConfig], NoDecode] = Field(default_factory=dict)
    capabilities: Annotated[dict[CardProvider, CapabilityOverride], NoDecode] = Field(
        default_factory=dict
    )

    weight_conversion: Decimal = _WEIGHTS.conversion
    weight_availability: Decimal = _WEIGHTS.availability
    weight_cost: Decimal = _WEIGHTS.cost
    weight_latency: Decimal = _WEIGHTS.latency

    breaker_failure_threshold: int = Field(default=_BREAKER.failure_threshold, ge=1)
    breaker_error_rate: Decimal = Field(default=_BREAKER.error_rate, gt=0, le=1)
    breaker_min_calls: int = Field(default=_BREAKER.min_calls, ge=1)
    breaker_window_seconds: int = Field(default=_BREAKER.window_seconds, ge=1, le=86_400)
    breaker_cooldown_seconds: int = Field(default=_BREAKER.cooldown_seconds, ge=0, le=3600)
    breaker_sample_size: int = Field(default=_BREAKER.sample_size, ge=1, le=10_000)

    create_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """One provider create call (connect + response)."""
    create_deadline_seconds: float = Field(default=15.0, gt=0, le=120)
    """All create attempts of one session, failover included: no new attempt starts after
    it, and a create still unanswered at it is treated as a possible orphan."""
    session_ttl_minutes: int = Field(default=60, ge=30, le=1440)
    """How long a card session stays payable. Stripe accepts a Checkout Session
    ``expires_at`` 30 minutes to 24 hours ahead, hence the bounds."""

    jobs_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    """How often each replica runs the reconciliation pass, the expiry job and the orphan sweep."""

    stats_window_hours: int = Field(default=168, ge=1, le=24 * 90)
    """Conversion is learned from this many recent hours of outcomes."""
    stats_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """Route statistics are cached per process this long (0: read every decision)."""

    @field_validator("enabled_providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("fees", "capabilities", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        return _exact_json(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.enabled_providers)) != len(self.enabled_providers):
            raise ValueError("PAGO_CARD_ENABLED_PROVIDERS names a provider twice")
        for provider in self.enabled_providers:
            for name in _CREDENTIALS[provider]:
                value: Any = getattr(self, name)
                secret = value.get_secret_value() if isinstance(value, SecretStr) else value
                if not secret:
                    raise ValueError(f"PAGO_CARD_{name.upper()} is required: {provider} is enabled")
        try:
            self.weights  # noqa: B018 - built for its check
        except ValueError as e:
            raise ValueError(f"PAGO_CARD_WEIGHT_*: {e}") from None
        if self.create_timeout_seconds > self.create_deadline_seconds:
            raise ValueError(
                "PAGO_CARD_CREATE_TIMEOUT_SECONDS must not exceed PAGO_CARD_CREATE_DEADLINE_SECONDS"
            )
        return self

    @property
    def weights(self) -> Weights:
        return Weights(
            conversion=self.weight_conversion,
            availability=self.weight_availability,
            cost=self.weight_cost,
            latency=self.weight_latency,
        )

    @property
    def breaker(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self.breaker_failure_threshold,
            error_rate=self.breaker_error_rate,
            min_calls=self.breaker_min_calls,
            window_seconds=self.breaker_window_seconds,
            cooldown_seconds=self.breaker_cooldown_seconds,
            # The probe's hold outlives one create call, so a slow probe is not doubled.
            probe_seconds=int(self.create_timeout_seconds) + 5,
            sample_size=self.breaker_sample_size,
        )

    def fee_schedules(self) -> Mapping[CardProvider, FeeSchedule]:
        return {provider: fee.schedule() for provider, fee in self.fees.items()}

    def capabilities_for(self, provider: CardProvider, declared: Capabilities) -> Capabilities:
        """What routing uses for ``provider``: the adapter's ``declared`` capabilities with this
        deployment's overrides applied."""
        override = self.capabilities.get(provider)
        return declared if override is None else override.apply(declared)
