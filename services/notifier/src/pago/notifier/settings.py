"""The notifier's settings: ``CommonSettings`` plus consumer, delivery and egress-policy knobs.

Every notifier-only variable is spelled out in its ``alias`` (the name to set). The two
``PAGO_WEBHOOK_*`` variables are read by the api too, so an endpoint the api accepts is one the
notifier will call.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from pago.common.settings import CommonSettings, Environment

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: object) -> object:
    # A comma-separated list in the environment ("10.1.0.0/16, fd12::/48"), a list in code.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class NotifierSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAGO_", extra="ignore", frozen=True, populate_by_name=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535, alias="PAGO_NOTIFIER_HTTP_PORT")
    """Liveness, readiness and ``/metrics``; 0 picks a free port (tests)."""
    group_id: str = Field(default="pago-notifier", min_length=1, alias="PAGO_NOTIFIER_GROUP_ID")
    """Kafka consumer group of ``checkout.sessions``. Replicas share it; change it only to run
    a second, independent notifier (it then reads the topic from the oldest retained event)."""
    card_group_id: str | None = Field(
        default=None, min_length=1, alias="PAGO_NOTIFIER_CARD_GROUP_ID"
    )
    """Kafka consumer group of ``card.sessions``; unset: ``<group_id>-cards``
    (``pago-notifier-cards``), so a second notifier with its own ``group_id`` gets its own."""
    batch_size: int = Field(default=500, ge=1, le=10_000, alias="PAGO_NOTIFIER_BATCH_SIZE")
    """Most session events fanned out in one database transaction."""
    batch_timeout_ms: int = Field(default=50, ge=1, le=10_000, alias="PAGO_NOTIFIER_BATCH_WAIT_MS")
    fetch_wait_ms: int = Field(default=100, ge=1, le=10_000, alias="PAGO_NOTIFIER_FETCH_WAIT_MS")
    session_timeout_ms: int = Field(
        default=10_000, ge=100, le=300_000, alias="PAGO_NOTIFIER_SESSION_TIMEOUT_MS"
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=50, le=60_000, alias="PAGO_NOTIFIER_HEARTBEAT_MS"
    )
    retry_max_backoff: float = Field(default=30.0, gt=0, alias="PAGO_NOTIFIER_RETRY_MAX_BACKOFF")
    """Seconds between attempts at a consumer batch whose fan-out keeps failing (doubling)."""

    concurrency: int = Field(default=64, ge=1, le=4096, alias="PAGO_NOTIFIER_CONCURRENCY")
    """Webhook requests in flight at once in one process."""
    endpoint_concurrency: int = Field(
        default=4, ge=1, le=1024, alias="PAGO_NOTIFIER_ENDPOINT_CONCURRENCY"
    )
    """Requests in flight to one endpoint at once in one process: a slow endpoint holds at most
    this many of the ``concurrency`` slots, so it never delays the others."""
    timeout: float = Field(default=10.0, gt=0, le=120, alias="PAGO_NOTIFIER_TIMEOUT_SECONDS")
    """Whole-attempt limit in seconds: resolve, connect, send, and read the response head."""
    poll_interval: float = Field(default=0.5, gt=0, le=60, alias="PAGO_NOTIFIER_POLL_INTERVAL")
    """Seconds between looks for due retries, pings and redeliveries (new events wake the
    worker at once)."""
    lease: float = Field(default=60.0, gt=0, alias="PAGO_NOTIFIER_LEASE_SECONDS")
    """How long a claimed delivery stays hidden from other workers; a process that dies
    mid-request leaves its deliveries to be retried after this. Must exceed ``timeout``."""
    retry_unit: float = Field(default=1.0, gt=0, le=1.0, alias="PAGO_NOTIFIER_RETRY_UNIT_SECONDS")
    """Length of one schedule "second" in real seconds: 1 in production; tests shrink it so the
    15 s … 3 days schedule runs in moments. ``Retry-After`` is never scaled."""
    retry_jitter: float = Field(default=0.1, ge=0, lt=1, alias="PAGO_NOTIFIER_RETRY_JITTER")
    """Each retry delay is multiplied by a uniform factor in ``[1 - jitter, 1 + jitter]``."""
    shutdown_timeout: float = Field(default=30.0, gt=0, alias="PAGO_NOTIFIER_SHUTDOWN_TIMEOUT")
    """Seconds SIGTERM waits for the consumer batch and the requests in flight."""

    live_feed: bool = Field(default=True, alias="PAGO_NOTIFIER_LIVE_FEED")
    """Append every session event to the Redis live feed the hosted checkout page reads."""

    allow_loopback: bool | None = Field(default=None, alias="PAGO_WEBHOOK_ALLOW_LOOPBACK")
    """Let webhook URLs reach 127.0.0.0/8 and ::1. Unset: yes in development (``make dev``
    delivers to the developer's app on localhost), no elsewhere; ``true`` is refused in
    production."""
    allowed_networks: Annotated[list[IpNetwork], NoDecode] = Field(
        default_factory=list, alias="PAGO_WEBHOOK_ALLOWED_NETWORKS"
    )
    """Private ranges a self-hosted operator deliberately allows (merchant apps on the same
    private network), comma-separated CIDRs. Cloud metadata addresses stay refused."""

    @model_validator(mode="before")
    @classmethod
    def _split_networks(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("allowed_networks", "PAGO_WEBHOOK_ALLOWED_NETWORKS"):
                if key in data:
                    data[key] = _networks(data[key])
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.allow_loopback and self.is_production:
            raise ValueError("PAGO_WEBHOOK_ALLOW_LOOPBACK must not be true in production")
        if self.lease <= self.timeout:
            raise ValueError(
                "PAGO_NOTIFIER_LEASE_SECONDS must exceed PAGO_NOTIFIER_TIMEOUT_SECONDS"
            )
        return self

    @property
    def loopback_allowed(self) -> bool:
        """The explicit setting, else whether this is development."""
        if self.allow_loopback is not None:
            return self.allow_loopback
        return self.env is Environment.DEVELOPMENT

    @property
    def card_group(self) -> str:
        """The consumer group of ``card.sessions``."""
        return self.card_group_id or f"{self.group_id}-cards"
