"""Values the state machine reads and writes: a session, its transactions, an observed transfer.

Every amount is an ``int`` of base units of the session's token (``decimals`` beside it).
A transfer's identity inside one session is ``(tx_hash, log_index)``: a session lives on one
network, so the network part of the global identity ``(network, tx_hash, log_index)`` is fixed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Self

from pago.common.enums import (
    ExceptionStatus,
    SessionStatus,
    Token,
    TransactionStatus,
    TransferStage,
)


class TransferKey(NamedTuple):
    """Identity of a transfer within a session: the same key is the same money."""

    tx_hash: str
    log_index: int


def _require_aware(name: str, value: datetime) -> None:
    # Naive and aware datetimes do not compare; refuse naive ones where they enter, not at a
    # comparison deep in the state machine.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """A token transfer to the session's deposit address as a watcher reported it."""

    tx_hash: str
    log_index: int
    token: Token
    amount: int
    """Base units of ``token``."""
    from_address: str
    stage: TransferStage
    confirmations: int = 0
    block_time: datetime | None = None
    """The block's timestamp (chain time); ``None`` from a watcher older than the field."""

    def __post_init__(self) -> None:
        if self.amount < 0:
            raise ValueError("amount must be >= 0 base units")
        if self.log_index < 0 or self.confirmations < 0:
            raise ValueError("log_index and confirmations must be >= 0")
        if self.block_time is not None:
            _require_aware("block_time", self.block_time)

    @property
    def key(self) -> TransferKey:
        return TransferKey(self.tx_hash, self.log_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxRecord:
    """A transfer as the session keeps it (one row of ``transactions``).

    Invariant: ``credited`` is true exactly when ``amount`` is counted in the session's
    ``amount_received``; it never goes back to false, even when the transfer is later reverted
    (the credit stands and a ``reverted_credit`` exception goes to a human instead).
    """

    tx_hash: str
    log_index: int
    token: Token
    amount: int
    """Base units of ``token`` (which may differ from the session's token: ``wrong_token``)."""
    from_address: str
    status: TransactionStatus
    credited: bool = False
    confirmations: int = 0
    aml_flags: tuple[str, ...] = ()
    """The screening provider's reasons when the sender was a hit, else empty."""
    block_time: datetime | None = None
    """Chain time of the transfer's block; ``None`` when the watcher did not say."""

    @property
    def key(self) -> TransferKey:
        return TransferKey(self.tx_hash, self.log_index)

    @property
    def in_flight(self) -> bool:
        """Seen on chain but not decided yet: only detected, or held for AML screening."""
        return self.status is TransactionStatus.CONFIRMING and not self.credited

    @classmethod
    def from_observation(
        cls,
        obs: Observation,
        status: TransactionStatus,
        *,
        credited: bool = False,
        aml_flags: tuple[str, ...] = (),
    ) -> Self:
        return cls(
            tx_hash=obs.tx_hash,
            log_index=obs.log_index,
            token=obs.token,
            amount=obs.amount,
            from_address=obs.from_address,
            status=status,
            credited=credited,
            confirmations=obs.confirmations,
            aml_flags=aml_flags,
            block_time=obs.block_time,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState:
    """What the matcher knows of one checkout session.

    Invariants the state machine keeps: ``amount_received`` is the sum of ``amount`` over the
    ``credited`` transactions; ``fee_amount``/``net_amount`` are non-zero only when ``Paid`` or
    ``Overpaid`` and then ``fee_amount + net_amount == amount_received``; at most one
    transaction per :class:`TransferKey`.
    """

    id: str
    status: SessionStatus
    token: Token
    decimals: int
    amount_expected: int
    """Base units of ``token``."""
    expires_at: datetime
    amount_received: int = 0
    fee_amount: int = 0
    net_amount: int = 0
    transactions: tuple[TxRecord, ...] = ()
    """In the order they were first seen."""
    timed_out: bool = False
    """``Expired`` by the clock (the expiry job), not cancelled by the merchant: a payment whose
    block time is before ``expires_at`` still credits it when it is processed late."""

    def __post_init__(self) -> None:
        if self.amount_expected <= 0:
            raise ValueError("amount_expected must be > 0 base units")
        if min(self.amount_received, self.fee_amount, self.net_amount, self.decimals) < 0:
            raise ValueError("amounts and decimals must be >= 0")
        _require_aware("expires_at", self.expires_at)
        if len({tx.key for tx in self.transactions}) != len(self.transactions):
            raise ValueError("a transfer appears twice in transactions")

    def tx(self, key: TransferKey) -> TxRecord | None:
        """The transaction with this identity, if the session has seen it."""
        # Sessions see a handful of transfers; a scan beats keeping an index in a frozen value.
        return next((tx for tx in self.transactions if tx.key == key), None)

    def with_tx(self, record: TxRecord) -> SessionState:
        """A copy with ``record`` replacing the transaction of the same identity, or appended."""
        if self.tx(record.key) is None:
            return self.evolve(transactions=(*self.transactions, record))
        return self.evolve(
            transactions=tuple(record if tx.key == record.key else tx for tx in self.transactions)
        )

    def evolve(
        self,
        *,
        status: SessionStatus | None = None,
        expires_at: datetime | None = None,
        amount_received: int | None = None,
        fee_amount: int | None = None,
        net_amount: int | None = None,
        transactions: tuple[TxRecord, ...] | None = None,
        timed_out: bool | None = None,
    ) -> SessionState:
        """A typed ``dataclasses.replace`` over the fields that change after creation."""
        return dataclasses.replace(
            self,
            status=self.status if status is None else status,
            expires_at=self.expires_at if expires_at is None else expires_at,
            amount_received=self.amount_received if amount_received is None else amount_received,
            fee_amount=self.fee_amount if fee_amount is None else fee_amount,
            net_amount=self.net_amount if net_amount is None else net_amount,
            transactions=self.transactions if transactions is None else transactions,
            timed_out=self.timed_out if timed_out is None else timed_out,
        )


class AmlOutcome(StrEnum):
    CLEAR = "clear"
    HIT = "hit"
    UNAVAILABLE = "unavailable"
    """The screening provider could not answer (timeout, outage): nothing is known yet."""


@dataclass(frozen=True, slots=True)
class AmlVerdict:
    """The screening of a transfer's sender; ``flags`` are the provider's reasons on a hit."""

    outcome: AmlOutcome
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.flags and self.outcome is not AmlOutcome.HIT:
            raise ValueError("only a hit carries flags")

    @classmethod
    def clear(cls) -> Self:
        return cls(AmlOutcome.CLEAR)

    @classmethod
    def hit(cls, *flags: str) -> Self:
        return cls(AmlOutcome.HIT, flags)

    @classmethod
    def unavailable(cls) -> Self:
        return cls(AmlOutcome.UNAVAILABLE)


class ResolutionAction(StrEnum):
    """What an operator decided about a payment exception (the Resolution API's verbs)."""

    ACCEPT = "accept"
    REFUND_REQUESTED = "refund_requested"
    DISMISS = "dismiss"

    @property
    def exception_status(self) -> ExceptionStatus:
        """The status the exception row takes after this action."""
        return {
            ResolutionAction.ACCEPT: ExceptionStatus.ACCEPTED,
            ResolutionAction.REFUND_REQUESTED: ExceptionStatus.REFUND_REQUESTED,
            ResolutionAction.DISMISS: ExceptionStatus.DISMISSED,
        }[self]
