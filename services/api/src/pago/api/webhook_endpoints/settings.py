"""Settings of the webhook endpoints API (environment, prefix ``PAGO_``).

``PAGO_WEBHOOK_ALLOW_LOOPBACK`` and ``PAGO_WEBHOOK_ALLOWED_NETWORKS`` are the notifier's
variables of the same names: set them alike on both, so the api accepts exactly the URLs the
notifier will call.
"""

from __future__ import annotations

import ipaddress
from functools import cache
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pago.common.settings import Environment

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAGO_", extra="ignore", frozen=True, populate_by_name=True
    )

    env: Environment = Environment.DEVELOPMENT
    allow_loopback: bool | None = Field(default=None, alias="PAGO_WEBHOOK_ALLOW_LOOPBACK")
    """Accept URLs on 127.0.0.0/8, ::1 and ``localhost``. Unset: yes in development (a merchant
    app on the developer's machine), no elsewhere; ``true`` is refused in production."""
    allowed_networks: Annotated[list[IpNetwork], NoDecode] = Field(
        default_factory=list, alias="PAGO_WEBHOOK_ALLOWED_NETWORKS"
    )
    """Private ranges deliberately allowed (comma-separated CIDRs)."""
    max_endpoints: int = Field(default=16, ge=1, le=1000, alias="PAGO_WEBHOOK_MAX_ENDPOINTS")
    """Endpoints one merchant may have in one mode."""

    @model_validator(mode="before")
    @classmethod
    def _split_networks(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("allowed_networks", "PAGO_WEBHOOK_ALLOWED_NETWORKS"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = [part.strip() for part in value.split(",") if part.strip()]
        return data

    @model_validator(mode="after")
    def _not_in_production(self) -> Self:
        if self.allow_loopback and self.env is Environment.PRODUCTION:
            raise ValueError("PAGO_WEBHOOK_ALLOW_LOOPBACK must not be true in production")
        return self

    @property
    def loopback_allowed(self) -> bool:
        """The explicit setting, else whether this is development."""
        if self.allow_loopback is not None:
            return self.allow_loopback
        return self.env is Environment.DEVELOPMENT


@cache
def webhook_settings() -> WebhookSettings:
    """Read once per process, on first use (tests override the dependency instead)."""
    return WebhookSettings()
