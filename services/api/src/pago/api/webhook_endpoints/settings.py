"""The webhook URL policy's settings, a fragment of ``ApiSettings`` (prefix ``PAGO_``).

Read with the rest of the api's settings at start, so a bad value stops the process with one
line naming it. ``PAGO_WEBHOOK_ALLOW_LOOPBACK`` and ``PAGO_WEBHOOK_ALLOWED_NETWORKS`` are the
notifier's variables of the same names: set them alike on both, so the api accepts exactly the
URLs the notifier will call.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pago.common.settings import Environment

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGO_", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    webhook_allow_loopback: bool | None = None
    """Accept URLs on 127.0.0.0/8, ::1 and ``localhost``. Unset: yes in development (a merchant
    app on the developer's machine), no elsewhere; ``true`` is refused in production."""
    webhook_allowed_networks: Annotated[list[IpNetwork], NoDecode] = Field(default_factory=list)
    """Private ranges deliberately allowed (comma-separated CIDRs)."""
    webhook_max_endpoints: int = Field(default=16, ge=1, le=1000)
    """Endpoints one merchant may have in one mode."""

    @model_validator(mode="before")
    @classmethod
    def _split_networks(cls, data: object) -> object:
        if isinstance(data, dict):
            value = data.get("webhook_allowed_networks")
            if isinstance(value, str):
                data["webhook_allowed_networks"] = [
                    part.strip() for part in value.split(",") if part.strip()
                ]
        return data

    @model_validator(mode="after")
    def _no_loopback_webhooks_in_production(self) -> Self:
        if self.webhook_allow_loopback and self.env is Environment.PRODUCTION:
            raise ValueError("PAGO_WEBHOOK_ALLOW_LOOPBACK must not be true in production")
        return self

    @property
    def webhook_loopback_allowed(self) -> bool:
        """The explicit setting, else whether this is development."""
        if self.webhook_allow_loopback is not None:
            return self.webhook_allow_loopback
        return self.env is Environment.DEVELOPMENT
