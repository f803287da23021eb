"""What the hosted page shows: a session reduced to its public state (pure but for the lookup).

The page, its QR code and every SSE event are built from one ``PageState``, so the first render
and each live update agree. The state leaves out what only the merchant should see
(``client_reference_id``, sub-merchant, fees, senders' addresses).
"""

from __future__ import annotations

import decimal
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.checkout_page import repository
from pago.api.checkout_page.payment import payment_uri
from pago.common.enums import (
    Mode,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
)
from pago.common.events import SessionSnapshot
from pago.common.money import PRECISION
from pago.common.networks import Registry
from pago.common.sessions import build_session_snapshot, chain_family


class Phase(StrEnum):
    WAITING = "waiting"
    DETECTED = "detected"
    """A transfer is seen near the chain head, with no confirmation yet."""
    CONFIRMING = "confirming"
    UNDERPAID = "underpaid"
    PAID = "paid"
    EXPIRED = "expired"
    BLOCKED = "blocked"

    @property
    def is_final(self) -> bool:
        return self in (Phase.PAID, Phase.EXPIRED, Phase.BLOCKED)


class PageState(BaseModel):
    """One SSE ``state`` event, and the page's first render."""

    model_config = ConfigDict(frozen=True)

    id: str
    livemode: bool
    status: SessionStatus
    phase: Phase
    merchant_name: str
    merchant_logo_url: str | None
    amount: str
    amount_received: str
    amount_due: str
    """What is still to pay: ``amount - amount_received``, never below 0."""
    currency: Token
    network: Network
    network_name: str
    pay_address: str
    payment_uri: str
    """What the QR code encodes (EIP-681, Solana Pay, or the TRON address)."""
    confirmations: int
    """Of the newest transfer still confirming; 0 when none is."""
    required_confirmations: int
    expires_at: datetime
    success_url: str | None
    cancel_url: str | None


class SessionNotFound(LookupError):
    pass


def _decimal(text: str) -> Decimal:
    with decimal.localcontext(prec=PRECISION):
        return Decimal(text)


def _plain(value: Decimal) -> str:
    """``"10.5"``, never ``"1.05E+1"``, no trailing zeros."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class CheckoutPageService:
    def __init__(self, registry: Registry, *, checkout_base_url: str) -> None:
        self._registry = registry
        self._base_url = checkout_base_url

    async def snapshot(self, engine: AsyncEngine, session_id: str) -> SessionSnapshot:
        """The session object from Postgres (a short read; no transaction stays open)."""
        async with engine.connect() as conn:
            found = await repository.find_session(conn, session_id)
        if found is None:
            raise SessionNotFound(session_id)
        session, merchant, transactions, sub_merchant_code = found
        return build_session_snapshot(
            session,
            merchant=merchant,
            transactions=transactions,
            checkout_base_url=self._base_url,
            sub_merchant_code=sub_merchant_code,
        )

    def state(self, session: SessionSnapshot) -> PageState:
        mode = Mode.LIVE if session.livemode else Mode.TEST
        spec = self._registry.networks.get(session.network)
        mode_spec = spec.modes.get(mode) if spec is not None else None
        token = self._registry.token(session.network, mode, session.currency)
        with decimal.localcontext(prec=PRECISION):
            due = max(Decimal(0), _decimal(session.amount) - _decimal(session.amount_received))
        confirming = [t for t in session.transactions if t.status is TransactionStatus.CONFIRMING]
        confirmations = max((t.confirmations for t in confirming), default=0)
        name = session.network.value
        if mode_spec is not None and mode is Mode.TEST and mode_spec.name:
            name = f"{name} ({mode_spec.name})"
        return PageState(
            id=session.id,
            livemode=session.livemode,
            status=session.status,
            phase=_phase(session.status, bool(confirming), confirmations),
            merchant_name=session.merchant_name,
            merchant_logo_url=session.merchant_logo_url,
            amount=session.amount,
            amount_received=session.amount_received,
            amount_due=_plain(due),
            currency=session.currency,
            network=session.network,
            network_name=name,
            pay_address=session.pay_address,
            payment_uri=payment_uri(
                chain_family(session.network),
                pay_address=session.pay_address,
                contract=session.currency_contract,
                amount=due,
                decimals=token.decimals if token is not None else None,
                chain_id=mode_spec.chain_id if mode_spec is not None else None,
                label=session.merchant_name,
            ),
            confirmations=confirmations,
            required_confirmations=spec.confirmations_for(mode) if spec is not None else 0,
            expires_at=session.expires_at,
            success_url=session.success_url,
            cancel_url=session.cancel_url,
        )


def _phase(status: SessionStatus, confirming: bool, confirmations: int) -> Phase:
    match status:
        case SessionStatus.PAID | SessionStatus.OVERPAID:
            return Phase.PAID
        case SessionStatus.EXPIRED:
            return Phase.EXPIRED
        case SessionStatus.BLOCKED:
            return Phase.BLOCKED
        case SessionStatus.UNDERPAID:
            return Phase.UNDERPAID
        case _:
            if not confirming:
                return Phase.WAITING
            return Phase.CONFIRMING if confirmations > 0 else Phase.DETECTED
