"""Request and response bodies of ``/v1/payment_exceptions``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from pago.api.sessions.schemas import ListMeta
from pago.api.validation import SafeStr
from pago.common.enums import ExceptionKind, ExceptionStatus, Network, Token


class ResolveAction(StrEnum):
    """What an operator decides; the matcher applies it with the domain's rules."""

    ACCEPT = "accept"
    """Keep the money: a late payment is credited (a full one makes the session Paid); for any
    other kind the session does not move. Emits ``session.resolved``."""
    REFUND_REQUESTED = "refund_requested"
    """Mark the money for return to the sender (outside Pago, which holds no keys)."""
    DISMISS = "dismiss"
    """Close the case without action."""


class PaymentException(BaseModel):
    """Money that reached a session but needs a human decision."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="`pex_…`", examples=["pex_5b0f6c3e9a2d41b7c8e9f0a1"])
    object: Literal["payment_exception"] = "payment_exception"
    livemode: bool
    session_id: str
    kind: ExceptionKind = Field(
        description="`late_payment` (to an expired session), `overpayment` (after it was paid), "
        "`blocked_funds` (the sender failed AML), `wrong_token`, `aml_unavailable` (held until "
        "it can be screened), `reverted_credit` (a credit undone by a deep reorg)."
    )
    status: ExceptionStatus
    network: Network
    tx_hash: str
    log_index: int
    amount: str = Field(description="Decimal string in `currency`.", examples=["10.5"])
    currency: Token | None = Field(description="The token of `amount` (the transfer's).")
    detail: str
    requested_action: ResolveAction | None = Field(
        description="An action recorded and not yet applied (the matcher applies it in about "
        "a second)."
    )
    resolution_note: str | None
    resolution_error: str | None = Field(
        description="Why the last requested action could not be applied; the case stays open."
    )
    created_at: datetime
    resolved_at: datetime | None


class PaymentExceptionList(BaseModel):
    """``GET /v1/payment_exceptions``: newest first (``created_at`` desc, then ``id`` desc)."""

    data: list[PaymentException]
    meta: ListMeta


class ResolveRequest(BaseModel):
    """``POST /v1/payment_exceptions/{id}/resolve``. Unknown fields are ignored, as elsewhere."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"action": "accept", "note": "customer confirmed"}]},
    )

    action: ResolveAction
    note: Annotated[SafeStr, Field(max_length=1000)] | None = Field(
        default=None, description="Kept with the case for the audit trail."
    )
