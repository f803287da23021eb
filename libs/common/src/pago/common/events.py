"""Event schemas of the four Kafka topics (frozen, versioned; ``extra="forbid"``).

Amounts travel as ``int`` base units beside ``decimals``; the session snapshot carries the API's
decimal strings because it is what webhooks and the hosted page show verbatim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pago.common.enums import (
    ChainFamily,
    ExceptionKind,
    Mode,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = 1

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- checkout.sessions ----------------------------------------------------------------------


class PricingSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str
    amount: str
    exchange_rate: str


class TransactionSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tx_hash: str
    amount: str
    network: Network
    status: TransactionStatus
    confirmations: int
    from_address: str
    created_at: datetime


class SessionSnapshot(BaseModel):
    """The session object exactly as the API returns it (IronixPay field names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    livemode: bool
    url: str
    status: SessionStatus
    amount: str
    amount_expected: str
    amount_received: str
    fee_amount: str
    net_amount: str
    currency: Token
    currency_contract: str
    network: Network
    chain_family: ChainFamily
    merchant_name: str
    merchant_logo_url: str | None
    pay_address: str
    client_reference_id: str | None
    pricing: PricingSnapshot
    success_url: str | None
    cancel_url: str | None
    sub_merchant_code: str | None
    transactions: tuple[TransactionSnapshot, ...]
    expires_at: datetime
    created_at: datetime


class _SessionEvent(Event):
    event_id: str
    """``evt_…``; stable across redeliveries, so consumers deduplicate on it."""
    session_id: str
    merchant_id: str
    mode: Mode
    occurred_at: datetime
    session: SessionSnapshot


class SessionCreated(_SessionEvent):
    type: Literal["session.created"] = "session.created"


class SessionUpdated(_SessionEvent):
    type: Literal["session.updated"] = "session.updated"
    previous_status: SessionStatus | None = None


class SessionPaymentDetected(_SessionEvent):
    type: Literal["session.payment_detected"] = "session.payment_detected"
    tx_hash: str


class SessionResolved(_SessionEvent):
    """An operator accepted a payment exception of this session (Resolution API).

    ``session`` is the session after the acceptance: a late full payment accepted on an
    ``Expired`` session shows it ``Paid`` here; any other acceptance leaves it as it was.
    """

    type: Literal["session.resolved"] = "session.resolved"
    exception_id: str
    exception_kind: ExceptionKind
    tx_hash: str
    log_index: int


AnySessionEvent = SessionCreated | SessionUpdated | SessionPaymentDetected | SessionResolved
SessionEvent = Annotated[AnySessionEvent, Field(discriminator="type")]
SESSION_EVENT_ADAPTER: TypeAdapter[AnySessionEvent] = TypeAdapter(SessionEvent)


# --- chain.watchlist ------------------------------------------------------------------------


class WatchAddress(Event):
    """Watch ``address`` on ``network`` in ``mode`` until ``watch_until``; a tombstone stops it."""

    network: Network
    mode: Mode
    address: str
    session_id: str
    watch_until: datetime


# --- chain.transfers ------------------------------------------------------------------------


class TransferObserved(Event):
    """One token transfer seen by a watcher; identity is ``(network, tx_hash, log_index)``."""

    network: Network
    mode: Mode
    token: Token
    contract: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    amount_raw: int = Field(ge=0)
    """Base units of ``token`` (``decimals`` beside it); never a float."""
    decimals: int = Field(ge=0, le=36)
    confirmations: int = Field(ge=0)
    stage: TransferStage
    observed_at: datetime


# --- chain.cursors --------------------------------------------------------------------------


class CursorCommitted(Event):
    """The last block (or slot) whose transfers the broker has acknowledged, all of them."""

    network: Network
    mode: Mode
    block_number: int
    block_hash: str
    committed_at: datetime
