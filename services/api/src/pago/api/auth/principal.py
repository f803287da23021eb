"""Who is calling: the merchant (and optional sub-merchant) behind an API key, in one mode."""

from __future__ import annotations

from dataclasses import dataclass

from pago.common.enums import Mode


@dataclass(frozen=True, slots=True)
class MerchantProfile:
    id: str
    name: str
    logo_url: str | None
    session_expiry_minutes: int
    duplicate_order_guard: bool = True
    """IronixPay's duplicate-order guard (``merchants.duplicate_order_guard``)."""


@dataclass(frozen=True, slots=True)
class SubMerchantRef:
    id: str
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    mode: Mode
    merchant: MerchantProfile
    sub_merchant: SubMerchantRef | None = None
    """Set when the request carried ``X-Sub-Merchant-Code``: the caller acts as that
    sub-merchant and sees only its sessions."""

    @property
    def livemode(self) -> bool:
        return self.mode is Mode.LIVE
