"""Settings shared by every service (pydantic-settings, prefix ``PAGO_``).

The three server URLs keep their conventional names (``DATABASE_URL``, ``REDIS_URL``,
``KAFKA_BOOTSTRAP_SERVERS``); everything else is ``PAGO_*``. Nothing secret has a default in
production: a missing one stops the process with one line naming it.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from functools import cached_property
from typing import NoReturn, Self, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pago.common.errors import ConfigError
from pago.common.networks import Registry, load_registry


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


DEV_ONLY_PEPPER = "pago-dev-only-pepper-not-for-production"


class ServiceSettings(BaseSettings):
    """What every service reads: Redis, Kafka, the registry. A service that keeps no state in
    Postgres (the watcher) builds on this one and so never asks for ``DATABASE_URL``."""

    model_config = SettingsConfigDict(env_prefix="PAGO_", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    redis_url: str = Field(validation_alias=AliasChoices("REDIS_URL", "PAGO_REDIS_URL"))
    kafka_bootstrap_servers: str = Field(
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "PAGO_KAFKA_BOOTSTRAP_SERVERS")
    )
    chains_file: str | None = None
    log_level: str = "INFO"

    @cached_property
    def registry(self) -> Registry:
        return load_registry(self.chains_file)

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION


class CommonSettings(ServiceSettings):
    """Settings of a service backed by Postgres (api, matcher, notifier, the outbox relay)."""

    database_url: str = Field(validation_alias=AliasChoices("DATABASE_URL", "PAGO_DATABASE_URL"))
    db_pool_size: int = Field(default=10, ge=1, le=200)


class SecretSettings(CommonSettings):
    """Settings of a service that hashes API keys (api) — the pepper is its secret."""

    api_key_pepper: SecretStr | None = None

    @model_validator(mode="after")
    def _secrets_in_production(self) -> Self:
        if self.api_key_pepper is None:
            if self.is_production:
                raise ValueError("PAGO_API_KEY_PEPPER is required in production")
            object.__setattr__(self, "api_key_pepper", SecretStr(DEV_ONLY_PEPPER))
        return self


def _env_name(settings_cls: type[BaseSettings], loc: str) -> str:
    """The environment variable a user sets for ``loc`` (a field name or one of its aliases)."""
    for name, info in settings_cls.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc == name or loc in choices:
            if choices:
                return choices[0]
            return f"{settings_cls.model_config.get('env_prefix', '')}{name}".upper()
    return loc.upper()


def describe_validation_error(settings_cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line naming every bad or missing setting by its environment variable."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        name = _env_name(settings_cls, field) if field else ""
        if err["type"] == "missing":
            parts.append(f"missing required setting {name}")
        elif name:
            parts.append(f"invalid setting {name}: {err['msg']}")
        else:
            parts.append(str(err["msg"]).removeprefix("Value error, "))
    return "; ".join(parts)


def exit_with(service: str, message: str) -> NoReturn:
    print(f"{service}: {message}", file=sys.stderr)  # noqa: T201 - the one line a user reads
    raise SystemExit(2)


S = TypeVar("S", bound=ServiceSettings)


def load_settings(settings_cls: type[S], service: str) -> S:
    """Build settings and the registry, or exit 2 with one line naming what is wrong."""
    try:
        settings = settings_cls()
        _ = settings.registry  # a bad chains file must stop the process at start, not later
    except ValidationError as exc:
        exit_with(service, describe_validation_error(settings_cls, exc))
    except ConfigError as exc:
        exit_with(service, str(exc))
    return settings
