"""What ``pago-admin`` needs: the database, the API key pepper and the OAuth key secret (not
Redis nor Kafka)."""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pago.api.addresses.settings import AddressPoolSettings
from pago.api.oauth.settings import OAuthSettings
from pago.common.errors import ConfigError
from pago.common.settings import DEV_ONLY_PEPPER, Environment


class AdminSettings(AddressPoolSettings, OAuthSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGO_", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    database_url: str = Field(validation_alias=AliasChoices("DATABASE_URL", "PAGO_DATABASE_URL"))
    api_key_pepper: SecretStr | None = None
    """Must be the api's (``PAGO_API_KEY_PEPPER``): keys are hashed with it."""
    default_fee_rate: Decimal = Decimal("0.005")
    """Shown for merchants without their own rate (the matcher applies the same default)."""
    default_fee_floor: Decimal = Decimal("1")

    @model_validator(mode="after")
    def _pepper(self) -> Self:
        if self.api_key_pepper is None:
            if self.env is Environment.PRODUCTION:
                raise ValueError("PAGO_API_KEY_PEPPER is required in production")
            object.__setattr__(self, "api_key_pepper", SecretStr(DEV_ONLY_PEPPER))
        return self

    @property
    def pepper(self) -> bytes:
        if self.api_key_pepper is None:  # the validator fills it in or refuses
            raise ConfigError("PAGO_API_KEY_PEPPER is not set")
        return self.api_key_pepper.get_secret_value().encode()
