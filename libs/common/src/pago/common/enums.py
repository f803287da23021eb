"""Domain vocabularies shared by every service (API spelling for what the API shows)."""

from enum import StrEnum


class Network(StrEnum):
    TRON = "TRON"
    SOLANA = "SOLANA"
    ETHEREUM = "ETHEREUM"
    BSC = "BSC"
    POLYGON = "POLYGON"
    ARBITRUM = "ARBITRUM"
    OPTIMISM = "OPTIMISM"
    BASE = "BASE"


class ChainFamily(StrEnum):
    EVM = "evm"
    TRON = "tron"
    SOLANA = "solana"


class Mode(StrEnum):
    """Which keys, sessions and chains: ``sk_live_`` keys see live, ``sk_test_`` keys see test."""

    LIVE = "live"
    TEST = "test"


class Token(StrEnum):
    USDT = "USDT"
    USDC = "USDC"


class SessionStatus(StrEnum):
    PENDING = "Pending"
    UNDERPAID = "Underpaid"
    PAID = "Paid"
    OVERPAID = "Overpaid"
    EXPIRED = "Expired"
    BLOCKED = "Blocked"

    @property
    def is_terminal(self) -> bool:
        """No credit moves it and it no longer expires: every status but ``LIVE_STATUSES``."""
        return self not in LIVE_STATUSES


LIVE_STATUSES: tuple[SessionStatus, ...] = (SessionStatus.PENDING, SessionStatus.UNDERPAID)
"""The payable statuses: a session in one takes credits, holds its deposit address and may expire.
Everything else is terminal. SQL spells the same set with ``pago.common.db.schema.live_status``."""


class TransferStage(StrEnum):
    """How sure a watcher is of a transfer: near the head, past confirmations, or reorged out."""

    DETECTED = "detected"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"


class TransactionStatus(StrEnum):
    """A session transaction as the API shows it."""

    CONFIRMING = "Confirming"
    CONFIRMED = "Confirmed"
    REVERTED = "Reverted"
    BLOCKED = "Blocked"


class ExceptionKind(StrEnum):
    LATE_PAYMENT = "late_payment"
    OVERPAYMENT = "overpayment"
    BLOCKED_FUNDS = "blocked_funds"
    WRONG_TOKEN = "wrong_token"  # noqa: S105 - an exception kind, not a secret
    AML_UNAVAILABLE = "aml_unavailable"
    REVERTED_CREDIT = "reverted_credit"


class ExceptionStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REFUND_REQUESTED = "refund_requested"
    DISMISSED = "dismissed"


class WebhookEventType(StrEnum):
    SESSION_COMPLETED = "session.completed"
    SESSION_EXPIRED = "session.expired"
    SESSION_BLOCKED = "session.blocked"
    SESSION_RESOLVED = "session.resolved"
    SESSION_UNDERPAID = "session.underpaid"
    SESSION_PAYMENT_DETECTED = "session.payment_detected"
    SESSION_PAYMENT_REVERTED = "session.payment_reverted"
    CARD_SESSION_COMPLETED = "card_session.completed"
    CARD_SESSION_FAILED = "card_session.failed"
    CARD_SESSION_EXPIRED = "card_session.expired"
    CARD_SESSION_CREATED = "card_session.created"
    """Opt-in, like ``session.underpaid``: a merchant learns of creation from its own 201."""
    CARD_SESSION_CANCELLED = "card_session.cancelled"
    """Opt-in: a cancellation is the merchant's own act (or its customer's, at the provider)."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class CardSessionStatus(StrEnum):
    """A card checkout session (``POST /api/v1/sessions``), in the seed's spelling."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self is not CardSessionStatus.PENDING


class CardProvider(StrEnum):
    """The card payment providers Pago routes to (``routing.selectedProvider``)."""

    STRIPE = "stripe"
    ADYEN = "adyen"
    PAYPAL = "paypal"
