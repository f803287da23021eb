"""The watcher's settings: ``ServiceSettings`` (Kafka, Redis, registry; no ``DATABASE_URL``)
plus the scan, RPC, leadership and HTTP knobs. Each is spelled out in its ``alias``."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from pago.common.enums import Mode, Network
from pago.common.settings import ServiceSettings
from pago.watcher.core.leadership import SAFETY


class Leadership(StrEnum):
    REDIS = "redis"
    """A Redis lease with fencing: run two replicas, one scans, the other takes over."""
    NONE = "none"
    """No lease: exactly one replica, on purpose (never run two of these)."""


class ConfirmAt(StrEnum):
    DEPTH = "depth"
    """``confirmed`` at head − confirmations (the registry's depth)."""
    FINALIZED = "finalized"
    """``confirmed`` at the chain's finalized block (EVM ``finalized`` tag, TRON solidified)."""


class WatcherSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAGO_", extra="ignore", frozen=True, populate_by_name=True
    )

    network: Network = Field(alias="PAGO_WATCHER_NETWORK")
    """Also ``--network``; one process watches one network in one mode."""
    mode: Mode = Field(alias="PAGO_WATCHER_MODE")
    """Also ``--mode``."""
    rpc_urls: str = Field(default="", alias="PAGO_WATCHER_RPC_URLS")
    """Comma-separated; overrides the registry's ``rpc_urls``. The first is the primary."""
    start_block: int | None = Field(default=None, ge=0, alias="PAGO_WATCHER_START_BLOCK")
    """First block of a first start (no cursor yet); default: head − confirmations."""
    confirm_at: ConfirmAt | None = Field(default=None, alias="PAGO_WATCHER_CONFIRM_AT")
    """Default: ``finalized`` where the registry names that commitment (SOLANA), else
    ``depth``; see ``confirm_finalized``."""
    detect_depth: int | None = Field(default=0, ge=0, alias="PAGO_WATCHER_DETECT_DEPTH")
    """Blocks on top before ``detected`` is published (0: from the head block itself); an
    empty value turns the detected stage off."""

    poll_interval: float = Field(default=1.0, gt=0, alias="PAGO_WATCHER_POLL_INTERVAL")
    """Seconds between head polls (about the block time is plenty)."""
    initial_range: int = Field(default=500, ge=1, alias="PAGO_WATCHER_INITIAL_RANGE")
    max_range: int = Field(default=2000, ge=1, alias="PAGO_WATCHER_MAX_RANGE")
    """Largest ``eth_getLogs`` range in blocks; the size adapts below it."""
    concurrency: int = Field(default=4, ge=1, le=64, alias="PAGO_WATCHER_CONCURRENCY")
    """Range queries in flight at once (published in order regardless)."""
    ring_size: int = Field(default=256, ge=8, le=100_000, alias="PAGO_WATCHER_RING_SIZE")
    """Recent block hashes kept: reorgs up to this deep are rewound and reverted in full."""
    cursor_interval: float = Field(default=1.0, ge=0, alias="PAGO_WATCHER_CURSOR_INTERVAL")
    """Least seconds between cursor records."""
    backfill_blocks: int = Field(default=1000, ge=0, alias="PAGO_WATCHER_BACKFILL_BLOCKS")
    """Blocks behind the scan that an address arriving late is looked up over at least (all of
    its back-fill when its ``WatchAddress`` has no ``created_at``: an older api)."""
    backfill_margin: float = Field(default=120.0, ge=0, alias="PAGO_WATCHER_BACKFILL_MARGIN")
    """Seconds before the session's ``created_at`` a late address's back-fill starts (clocks of
    the api and of block producers differ; a block's timestamp may precede its inclusion)."""
    backfill_max_age: float = Field(default=7 * 86_400, gt=0, alias="PAGO_WATCHER_BACKFILL_MAX_AGE")
    """Seconds: a session older than this is back-filled from this far back only."""
    progress_interval: float = Field(default=5.0, ge=0, alias="PAGO_WATCHER_PROGRESS_INTERVAL")
    """Least seconds between two ``ChainScanned`` rounds on ``chain.transfers`` (one marker per
    partition), and the most a cursor move waits for its round."""
    watch_retention: float = Field(default=7 * 86_400, ge=0, alias="PAGO_WATCHER_WATCH_RETENTION")
    """Seconds an address stays watched after its ``watch_until`` (catch-up after an outage)."""

    rpc_timeout: float = Field(default=10.0, gt=0, alias="PAGO_WATCHER_RPC_TIMEOUT")
    rpc_backoff_max: float = Field(default=30.0, gt=0, alias="PAGO_WATCHER_RPC_BACKOFF_MAX")
    stale_blocks: int = Field(default=10, ge=0, alias="PAGO_WATCHER_STALE_BLOCKS")
    """An endpoint this many blocks behind the best one is avoided."""
    stale_after: float = Field(default=60.0, gt=0, alias="PAGO_WATCHER_STALE_AFTER")
    """An endpoint whose head has not moved for this many seconds (while another's has) is
    avoided; if no head moves, readiness fails."""

    leadership: Leadership = Field(default=Leadership.REDIS, alias="PAGO_WATCHER_LEADERSHIP")
    lease_ttl: float = Field(default=10.0, ge=1, alias="PAGO_WATCHER_LEASE_TTL")
    """Seconds a lease outlives its last renewal: a dead leader's standby takes over within
    about ``lease_ttl + lease_retry``."""
    lease_renew: float = Field(default=3.0, gt=0, alias="PAGO_WATCHER_LEASE_RENEW")
    lease_retry: float = Field(default=2.0, gt=0, alias="PAGO_WATCHER_LEASE_RETRY")
    """Seconds between a standby's attempts to take the lease."""

    tron_api_key: SecretStr | None = Field(default=None, alias="PAGO_WATCHER_TRON_API_KEY")
    """TRON: a TronGrid key, sent as ``TRON-PRO-API-KEY`` to every endpoint of the watcher (so
    list only providers you trust with it)."""
    tron_solidified_from: str = Field(
        default="nodeinfo",
        pattern="^(nodeinfo|walletsolidity)$",
        alias="PAGO_WATCHER_TRON_SOLIDIFIED_FROM",
    )
    """TRON with ``PAGO_WATCHER_CONFIRM_AT=finalized``: the solidified block from
    ``wallet/getnodeinfo`` (``nodeinfo``) or ``walletsolidity/getnowblock``."""
    tron_max_in_flight: int = Field(
        default=16, ge=1, le=256, alias="PAGO_WATCHER_TRON_MAX_IN_FLIGHT"
    )
    """TRON: HTTP requests open at once (blocks and receipts of a range are fetched in
    parallel); keep it within the provider's rate limit."""

    solana_rpc_budget: float = Field(default=100.0, ge=0, alias="PAGO_WATCHER_SOLANA_RPC_BUDGET")
    """SOLANA: JSON-RPC calls per second the watcher may spend over all its endpoints (each
    entry of a batch counts, as providers meter them); 0: unlimited. A tight budget slows the
    sweeps (the confirmed stage lags), it never skips an account."""
    solana_batch_size: int = Field(
        default=100, ge=1, le=1000, alias="PAGO_WATCHER_SOLANA_BATCH_SIZE"
    )
    """SOLANA: calls per JSON-RPC batch (1: no batches); a node that refuses batches
    (Surfpool) gets single calls, ``PAGO_WATCHER_SOLANA_CONCURRENCY`` at a time."""
    solana_concurrency: int = Field(
        default=8, ge=1, le=256, alias="PAGO_WATCHER_SOLANA_CONCURRENCY"
    )
    """SOLANA: HTTP requests in flight at once per watcher."""
    solana_signature_page: int = Field(
        default=1000, ge=1, le=1000, alias="PAGO_WATCHER_SOLANA_SIGNATURE_PAGE"
    )
    """SOLANA: ``getSignaturesForAddress`` page size (1,000 is the RPC maximum); fuller
    histories are paged with ``before``."""
    solana_balance_hints: bool = Field(default=True, alias="PAGO_WATCHER_SOLANA_BALANCE_HINTS")
    """SOLANA, confirming at ``finalized``: detect between finalizations from the ATAs' token
    balances (``getMultipleAccounts``, 100 a call) instead of a signature poll per ATA per
    head; the confirmed stage always comes from full signature sweeps."""

    http_port: int = Field(default=8083, ge=0, le=65535, alias="PAGO_WATCHER_HTTP_PORT")
    """``/healthz``, ``/readyz``, ``/status``, ``/metrics``; 0 picks a free port."""
    shutdown_timeout: float = Field(default=20.0, gt=0, alias="PAGO_WATCHER_SHUTDOWN_TIMEOUT")

    @field_validator("detect_depth", "start_block", "tron_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _renew_well_within_ttl(self) -> Self:
        if self.lease_renew >= self.lease_ttl * SAFETY / 2:
            raise ValueError(
                "PAGO_WATCHER_LEASE_RENEW must be under half of 0.8 × PAGO_WATCHER_LEASE_TTL "
                "(a leader must get two tries at renewing before it has to step down)"
            )
        return self

    @property
    def confirm_finalized(self) -> bool:
        """Whether ``confirmed`` waits for the chain's own finality: ``confirm_at`` if set, else
        the registry's ``commitment`` (``finalized`` on SOLANA)."""
        if self.confirm_at is not None:
            return self.confirm_at is ConfirmAt.FINALIZED
        return self.registry.network(self.network).commitment == "finalized"

    def urls(self) -> tuple[str, ...]:
        """The endpoints to use: ``PAGO_WATCHER_RPC_URLS``, else the registry's."""
        own = tuple(u.strip() for u in self.rpc_urls.split(",") if u.strip())
        return own or self.registry.network(self.network).mode(self.mode).rpc_urls
