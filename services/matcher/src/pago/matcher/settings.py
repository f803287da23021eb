"""The matcher's settings: ``CommonSettings`` plus consumer, AML, expiry and HTTP knobs."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from pago.common.enums import Network
from pago.common.settings import CommonSettings


class AmlFailurePolicy(StrEnum):
    CLOSED = "closed"
    """No answer from the provider holds the payment (``aml_unavailable``); never credits."""
    OPEN = "open"
    """No answer credits anyway (counted and logged): only for operators who accept the risk."""


DEFAULT_CHAIN_IDS: dict[Network, str] = {
    Network.ETHEREUM: "1",
    Network.BSC: "56",
    Network.POLYGON: "137",
    Network.ARBITRUM: "42161",
    Network.OPTIMISM: "10",
    Network.BASE: "8453",
    Network.TRON: "tron",
    Network.SOLANA: "solana",
}
"""``chain_id`` of GoPlus-style ``address_security`` per network (EVM: the EIP-155 id)."""


class MatcherSettings(CommonSettings):
    """Every matcher-only variable is spelled out in its ``alias`` (the name to set)."""

    model_config = SettingsConfigDict(
        env_prefix="PAGO_", extra="ignore", frozen=True, populate_by_name=True
    )

    group_id: str = Field(default="pago-matcher", min_length=1, alias="PAGO_MATCHER_GROUP_ID")
    """The Kafka consumer group on chain.transfers: every replica of one deployment shares it
    (a new group starts from the oldest retained transfer)."""
    http_port: int = Field(default=8082, ge=0, le=65535, alias="PAGO_MATCHER_HTTP_PORT")
    """Liveness, readiness and ``/metrics``; 0 picks a free port (tests)."""
    batch_size: int = Field(default=1000, ge=1, le=10_000, alias="PAGO_MATCHER_BATCH_SIZE")
    """Most transfers handled in one database transaction (one poll of ``chain.transfers``)."""
    batch_timeout_ms: int = Field(default=100, ge=1, le=10_000, alias="PAGO_MATCHER_BATCH_WAIT_MS")
    """How long a poll waits for more records before handling what it has."""
    fetch_wait_ms: int = Field(default=100, ge=1, le=10_000, alias="PAGO_MATCHER_FETCH_WAIT_MS")
    """Longest a fetch waits at the broker for new records: the idle-time latency of a payment."""
    session_timeout_ms: int = Field(
        default=10_000, ge=100, le=300_000, alias="PAGO_MATCHER_SESSION_TIMEOUT_MS"
    )
    """How long the group waits for a member that stopped heartbeating (a crashed replica's
    partitions move after this); a graceful stop leaves the group at once."""
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=50, le=60_000, alias="PAGO_MATCHER_HEARTBEAT_MS"
    )
    retry_max_backoff: float = Field(default=30.0, gt=0, alias="PAGO_MATCHER_RETRY_MAX_BACKOFF")
    """Seconds between attempts at a batch that keeps failing (doubling from 0.5 s)."""
    shutdown_timeout: float = Field(default=30.0, gt=0, alias="PAGO_MATCHER_SHUTDOWN_TIMEOUT")
    """Seconds SIGTERM waits for the batch in flight before the process stops anyway."""
    checkout_base_url: str = Field(
        default="http://localhost:8000/checkout", alias="PAGO_CHECKOUT_BASE_URL"
    )
    """Public base of the hosted checkout page; a session's ``url`` is this plus its id."""
    run_relay: bool = Field(default=True, alias="PAGO_MATCHER_RELAY")
    """Run an outbox relay in-process (turn off when a separate relay deployment runs)."""

    expiry_interval: float = Field(default=5.0, gt=0, alias="PAGO_MATCHER_EXPIRY_INTERVAL")
    """Seconds between expiry passes (a pass repeats at once while it finds a full batch)."""
    expiry_batch_size: int = Field(default=500, ge=1, alias="PAGO_MATCHER_EXPIRY_BATCH")
    expiry_grace_seconds: float = Field(
        default=3600.0, ge=0, alias="PAGO_MATCHER_EXPIRY_GRACE_SECONDS"
    )
    """A session past ``expires_at`` expires once its network's watcher has proven the chain
    silent past it (progress markers) and no payment seen before it is still confirming; after
    this many seconds past ``expires_at`` it expires regardless (a dead watcher, a stuck
    transfer). A payment made before ``expires_at`` still credits when processed later."""

    @property
    def expiry_grace(self) -> timedelta:
        return timedelta(seconds=self.expiry_grace_seconds)

    resolution_interval: float = Field(default=0.25, gt=0, alias="PAGO_MATCHER_RESOLUTION_INTERVAL")
    """Seconds between polls for resolutions requested through the Resolution API."""
    aml_retry_interval: float = Field(default=30.0, gt=0, alias="PAGO_MATCHER_AML_RETRY_INTERVAL")
    """Seconds between re-screenings of payments held as ``aml_unavailable``."""

    aml_list_path: str | None = Field(default=None, alias="PAGO_AML_LIST_PATH")
    """Directory of sanctions files (``*.txt``, one address per line); unset = level 1 off."""
    aml_list_reload_interval: float = Field(default=60.0, gt=0, alias="PAGO_AML_LIST_RELOAD")
    """Seconds between checks of the list files' mtimes (SIGHUP reloads at once)."""
    aml_provider_url: str | None = Field(default=None, alias="PAGO_AML_PROVIDER_URL")
    """Base URL of a GoPlus-style risk API (``https://api.gopluslabs.io``); unset = level 2 off."""
    aml_provider_name: str = Field(default="goplus", alias="PAGO_AML_PROVIDER_NAME")
    aml_provider_token: SecretStr | None = Field(default=None, alias="PAGO_AML_PROVIDER_TOKEN")
    """Sent as ``Authorization`` when set (higher rate limits)."""
    aml_provider_timeout: float = Field(default=3.0, gt=0, alias="PAGO_AML_PROVIDER_TIMEOUT")
    aml_provider_attempts: int = Field(default=3, ge=1, le=10, alias="PAGO_AML_PROVIDER_ATTEMPTS")
    aml_provider_backoff: float = Field(default=0.2, ge=0, alias="PAGO_AML_PROVIDER_BACKOFF")
    """Seconds before the second attempt; doubles for each further one."""
    aml_provider_concurrency: int = Field(default=16, ge=1, alias="PAGO_AML_PROVIDER_CONCURRENCY")
    aml_failure_policy: AmlFailurePolicy = Field(
        default=AmlFailurePolicy.CLOSED, alias="PAGO_AML_FAILURE_POLICY"
    )
    aml_cache_ttl: int = Field(default=86_400, ge=1, alias="PAGO_AML_CACHE_TTL")
    """Seconds a provider's verdict is reused (24 h)."""
    aml_chain_ids: dict[Network, str] = Field(
        default_factory=lambda: dict(DEFAULT_CHAIN_IDS), alias="PAGO_AML_CHAIN_IDS"
    )
    """JSON object merged over the defaults, e.g. ``{"SOLANA": "501"}``."""

    @field_validator("aml_chain_ids", mode="after")
    @classmethod
    def _merge_chain_ids(cls, value: dict[Network, str]) -> dict[Network, str]:
        # An override names only what differs; every network keeps an id.
        return {**DEFAULT_CHAIN_IDS, **value}
