"""Event schemas of the four Kafka topics (frozen, versioned; unknown fields ignored).

Reading tolerates additive change: a field a newer producer added is ignored by an older
consumer (``extra="ignore"``), so a rolling deploy never turns a good record into a bad one.
Producers still build only the fields declared here (mypy's pydantic plugin refuses others).
``v`` is the *major* schema version: it changes only with an incompatible change (a field
removed, renamed or re-meant), and a consumer refuses, rather than guesses at, a record whose
``v`` (field or header) is above ``SCHEMA_VERSION`` — it goes to the dead-letter topic
(``pago.common.deadletter``) and is replayed once a consumer that reads it runs.

Amounts travel as ``int`` base units beside ``decimals``; the session snapshot carries the API's
decimal strings because it is what webhooks and the hosted page show verbatim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pago.common.enums import (
    CardProvider,
    CardSessionStatus,
    ChainFamily,
    ExceptionKind,
    Mode,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)

SCHEMA_VERSION = 1
"""The major version of every event schema this code reads and writes."""


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = SCHEMA_VERSION
    """Major schema version; additive changes keep it."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- checkout.sessions ----------------------------------------------------------------------


class PricingSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    currency: str
    amount: str
    exchange_rate: str


class TransactionSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    tx_hash: str
    amount: str
    network: Network
    status: TransactionStatus
    confirmations: int
    from_address: str
    created_at: datetime


class SessionSnapshot(BaseModel):
    """The session object exactly as the API returns it (IronixPay field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

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
    detection_rpc_url: str | None = None
    """A public RPC endpoint a checkout page may use to watch the chain; ``None`` when the
    network × mode configures none (IronixPay's session object carries it)."""


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


class SessionPaymentReverted(_SessionEvent):
    """A transfer already credited to this session was reverted by a reorg deeper than the
    confirmation depth. The credit stands (a ``reverted_credit`` exception asks a human);
    ``session`` shows the transaction as ``Reverted``. Opt-in webhook ``session.payment_reverted``.
    """

    type: Literal["session.payment_reverted"] = "session.payment_reverted"
    tx_hash: str
    log_index: int


AnySessionEvent = (
    SessionCreated
    | SessionUpdated
    | SessionPaymentDetected
    | SessionResolved
    | SessionPaymentReverted
)
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
    created_at: datetime | None = None
    """When the session was created: the watcher back-fills from the block at this time, however
    late the record reaches it. ``None`` from producers older than this field."""


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
    block_time: datetime | None = None
    """The block's own timestamp (chain time, UTC); decides whether a payment was made before
    ``expires_at``. ``None`` from watchers older than this field."""


class ChainScanned(Event):
    """Progress marker on ``chain.transfers``: the watcher of ``network`` × ``mode`` has published
    (and the broker acknowledged) every transfer to a watched address up to and including
    ``block_number``, whose timestamp is ``block_time``.

    Written to *every* partition of ``chain.transfers`` (explicit partition; key
    ``{network}:{mode}``; header ``event_type=ChainScanned``) after the transfers it covers were
    acked, so a consumer that reaches this record in partition ``p`` has seen every earlier
    transfer of that network × mode in ``p``. ``partitions`` is the topic's partition count, so
    the matcher knows when it holds a marker from every partition. It proves the chain silent
    for a session: no payment up to ``block_time`` remains unprocessed.
    """

    network: Network
    mode: Mode
    block_number: int = Field(ge=0)
    block_hash: str
    block_time: datetime
    partition: int = Field(ge=0)
    partitions: int = Field(ge=1)
    scanned_at: datetime


# --- chain.cursors --------------------------------------------------------------------------


class CursorCommitted(Event):
    """The last block (or slot) whose transfers the broker has acknowledged, all of them."""

    network: Network
    mode: Mode
    block_number: int
    block_hash: str
    committed_at: datetime


# --- card.sessions and card.provider_events ----------------------------------------------------


class CardAmountSnapshot(BaseModel):
    """An order's money in the currency's minor units (``exponent`` digits: JPY 0, AUD 2, KWD 3)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    currency: str
    exponent: int
    total: int
    shipping: int
    tax: int


class CardSessionSnapshot(BaseModel):
    """What a merchant needs to act on a card session's change (its webhook's ``data``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str
    """The Pago session's UUID (``sessionId``)."""
    order_reference: str
    status: CardSessionStatus
    amount: CardAmountSnapshot
    provider: CardProvider | None
    """The provider of the live attempt (``routing.selectedProvider``)."""
    provider_reference: str | None
    """That provider's id for the checkout (Stripe ``cs_…``, Adyen session id, PayPal order id)."""
    checkout_url: str | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


CardSessionEventType = Literal[
    "card_session.created",
    "card_session.completed",
    "card_session.failed",
    "card_session.expired",
    "card_session.cancelled",
]


class CardSessionEvent(Event):
    """A card session was created or reached a status; key: ``session_id``. The notifier
    delivers ``card_session.completed``, ``.failed`` and ``.expired`` as merchant webhooks."""

    type: CardSessionEventType
    event_id: str
    """``evt_…``; stable across redeliveries, so consumers deduplicate on it."""
    session_id: str
    merchant_id: str
    mode: Mode
    occurred_at: datetime
    previous_status: CardSessionStatus | None = None
    session: CardSessionSnapshot


class CardProviderEventReceived(Event):
    """A provider webhook, verified with the provider's scheme and first seen (the inbox's
    unique ``(provider, provider_event_id)``); key: ``session_id``."""

    type: Literal["card_provider.event_received"] = "card_provider.event_received"
    event_id: str
    provider: CardProvider
    provider_event_id: str
    """The provider's own id of the notification (Stripe ``evt_…``, Adyen ``pspReference`` +
    ``eventCode``, PayPal event ``id``): what the inbox deduplicates on."""
    provider_event_type: str
    """As the provider names it (``checkout.session.completed``, ``AUTHORISATION``, …)."""
    provider_reference: str
    session_id: str | None
    """The Pago session it was matched to (``None`` when no attempt has that reference)."""
    outcome: CardSessionStatus | None
    """The status it implies (``None``: informational, moves nothing)."""
    received_at: datetime
