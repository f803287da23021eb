"""Deposit-address pool settings, shared by the api and ``pago-admin`` (prefix ``PAGO_``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AddressPoolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGO_", extra="ignore", frozen=True)

    address_cooldown_days: float = Field(default=30.0, ge=0)
    """Days after a pool address's last session ended (the later of its ``expires_at`` and the
    time it reached a terminal status) before the address may be leased to another session. A
    customer who pays late, or pays again from an address book, in that time reaches the old
    session (a payment exception), never a stranger's."""
    address_pool_low_water: int = Field(default=20, ge=0)
    """A pool with fewer available addresses than this warns (log and metric); in development
    it refills itself with generated keys."""
    address_pool_check_seconds: float = Field(default=60.0, ge=0)
    """Seconds between pool-depth checks in each api process; 0 turns the check off."""
    address_pool_refill_batch: int = Field(default=100, ge=1, le=10_000)
    """Development only: addresses generated per refill of a pool below its low-water mark."""
    dev_pool_keys_dir: str | None = None
    """Development only: where the private keys of generated pool addresses are written (one
    JSON line per key, mode 0600), so a developer can sweep them. Unset: keys are discarded."""

    @property
    def address_cooldown(self) -> timedelta:
        return timedelta(days=self.address_cooldown_days)
