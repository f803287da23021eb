"""The session object (``SessionSnapshot``) built from database rows.

The api returns it, and the api and the matcher put it in every ``checkout.sessions`` event, so
webhooks, the hosted page and ``GET /v1/checkout/sessions/{id}`` say the same thing byte for
byte. Rows are plain mappings keyed by column name (a SQLAlchemy ``RowMapping`` or a ``dict``),
so a caller may overlay values it has not written yet (the matcher builds one snapshot per
state change inside its transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pago.common.enums import (
    ChainFamily,
    Mode,
    Network,
    SessionStatus,
    Token,
    TransactionStatus,
)
from pago.common.events import PricingSnapshot, SessionSnapshot, TransactionSnapshot
from pago.common.money import format_units
from pago.common.networks import EVM_NETWORKS

EXCHANGE_RATE_PLACES = 8
"""The API shows the rate with exactly 8 decimals (``"1.00000000"``), as it is stored."""


def chain_family(network: Network) -> ChainFamily:
    """The address family of ``network`` (fixed by the chain, not configuration)."""
    if network in EVM_NETWORKS:
        return ChainFamily.EVM
    return ChainFamily.TRON if network is Network.TRON else ChainFamily.SOLANA


def checkout_url(base_url: str, session_id: str) -> str:
    """The hosted checkout page of a session: the public checkout base, then the id."""
    return f"{base_url.rstrip('/')}/{session_id}"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("session timestamps must be timezone-aware")
    return value.astimezone(UTC)


def _units(value: Any) -> int:
    # NUMERIC(78,0) arrives as Decimal; an int overlay passes through untouched.
    return value if isinstance(value, int) else int(Decimal(value))


def _rate(value: Any) -> str:
    return f"{Decimal(value):.{EXCHANGE_RATE_PLACES}f}"


def transaction_snapshot(row: Mapping[Any, Any]) -> TransactionSnapshot:
    """One ``session_transactions`` row as the session object lists it."""
    return TransactionSnapshot(
        tx_hash=row["tx_hash"],
        amount=format_units(_units(row["amount"]), int(row["decimals"])),
        network=Network(row["network"]),
        status=TransactionStatus(row["status"]),
        confirmations=int(row["confirmations"]),
        from_address=row["from_address"],
        created_at=_utc(row["created_at"]),
    )


@dataclass(frozen=True, slots=True)
class SessionTemplate:
    """The fields of a session object that never change after creation, converted once.

    A caller that describes one session many times (the matcher: once per state change) keeps
    the template and calls :meth:`snapshot` with what changed — about a third of the cost of
    the one-off ``build_session_snapshot``, which gives the same object.
    """

    fields: Mapping[str, Any]
    decimals: int

    def snapshot(
        self,
        *,
        status: SessionStatus,
        amount_received: int,
        fee_amount: int,
        net_amount: int,
        expires_at: datetime,
        transactions: Sequence[TransactionSnapshot],
    ) -> SessionSnapshot:
        """The session object in this state (amounts in base units of the session's token)."""
        return SessionSnapshot(
            **self.fields,
            status=status,
            amount_received=format_units(amount_received, self.decimals),
            fee_amount=format_units(fee_amount, self.decimals),
            net_amount=format_units(net_amount, self.decimals),
            transactions=tuple(transactions),
            expires_at=_utc(expires_at),
        )


def session_template(
    session: Mapping[Any, Any],
    *,
    merchant: Mapping[Any, Any],
    checkout_base_url: str,
    sub_merchant_code: str | None = None,
) -> SessionTemplate:
    """The unchanging part of a ``checkout_sessions`` row's session object."""
    decimals = int(session["decimals"])
    network = Network(session["network"])
    expected = format_units(_units(session["amount_expected"]), decimals)
    fields = {
        "id": session["id"],
        "livemode": Mode(session["mode"]) is Mode.LIVE,
        "url": checkout_url(checkout_base_url, session["id"]),
        "amount": expected,
        "amount_expected": expected,
        "currency": Token(session["currency"]),
        "currency_contract": session["currency_contract"],
        "network": network,
        "chain_family": chain_family(network),
        "merchant_name": merchant["name"],
        "merchant_logo_url": merchant["logo_url"],
        "pay_address": session["pay_address"],
        "client_reference_id": session["client_reference_id"],
        "pricing": PricingSnapshot(
            currency=session["pricing_currency"],
            amount=session["pricing_amount"],
            exchange_rate=_rate(session["exchange_rate"]),
        ),
        "success_url": session["success_url"],
        "cancel_url": session["cancel_url"],
        "sub_merchant_code": sub_merchant_code,
        "created_at": _utc(session["created_at"]),
        # Stored at creation from the chains registry; a row from before it existed has none.
        "detection_rpc_url": session.get("detection_rpc_url"),
    }
    return SessionTemplate(fields, decimals)


def build_session_snapshot(
    session: Mapping[Any, Any],
    *,
    merchant: Mapping[Any, Any],
    transactions: Sequence[Mapping[Any, Any]],
    checkout_base_url: str,
    sub_merchant_code: str | None = None,
) -> SessionSnapshot:
    """The API's session object.

    ``session`` is a ``checkout_sessions`` row, ``merchant`` its ``merchants`` row (``name``,
    ``logo_url``), ``transactions`` its ``session_transactions`` rows in the order they were
    first seen, and ``sub_merchant_code`` the code of ``sub_merchant_id`` when there is one.
    Amounts are base units in the rows and normalized decimal strings here.
    """
    template = session_template(
        session,
        merchant=merchant,
        checkout_base_url=checkout_base_url,
        sub_merchant_code=sub_merchant_code,
    )
    return template.snapshot(
        status=SessionStatus(session["status"]),
        amount_received=_units(session["amount_received"]),
        fee_amount=_units(session["fee_amount"]),
        net_amount=_units(session["net_amount"]),
        expires_at=session["expires_at"],
        transactions=[transaction_snapshot(tx) for tx in transactions],
    )
