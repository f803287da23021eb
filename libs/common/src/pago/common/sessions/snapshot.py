"""The session object (``SessionSnapshot``) built from database rows.

The api returns it, and the api and the matcher put it in every ``checkout.sessions`` event, so
webhooks, the hosted page and ``GET /v1/checkout/sessions/{id}`` say the same thing byte for
byte. Rows are plain mappings keyed by column name (a SQLAlchemy ``RowMapping`` or a ``dict``),
so a caller may overlay values it has not written yet (the matcher builds one snapshot per
state change inside its transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

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


M = TypeVar("M", bound=BaseModel)


def _build(model: type[M], trusted: bool, **fields: Any) -> M:
    # Every field below is converted explicitly (enums, decimal strings, aware datetimes), so
    # a trusted caller may skip pydantic's second pass: it is most of the cost of an event.
    return model.model_construct(**fields) if trusted else model(**fields)


def transaction_snapshot(row: Mapping[Any, Any], *, trusted: bool = False) -> TransactionSnapshot:
    """One ``session_transactions`` row as the session object lists it."""
    return _build(
        TransactionSnapshot,
        trusted,
        tx_hash=row["tx_hash"],
        amount=format_units(_units(row["amount"]), int(row["decimals"])),
        network=Network(row["network"]),
        status=TransactionStatus(row["status"]),
        confirmations=int(row["confirmations"]),
        from_address=row["from_address"],
        created_at=_utc(row["created_at"]),
    )


def build_session_snapshot(
    session: Mapping[Any, Any],
    *,
    merchant: Mapping[Any, Any],
    transactions: Sequence[Mapping[Any, Any]],
    checkout_base_url: str,
    sub_merchant_code: str | None = None,
    trusted: bool = False,
) -> SessionSnapshot:
    """The API's session object.

    ``session`` is a ``checkout_sessions`` row, ``merchant`` its ``merchants`` row (``name``,
    ``logo_url``), ``transactions`` its ``session_transactions`` rows in the order they were
    first seen, and ``sub_merchant_code`` the code of ``sub_merchant_id`` when there is one.
    Amounts are base units in the rows and normalized decimal strings here. ``trusted`` skips
    pydantic validation of the result, for rows this process read or wrote itself (the matcher
    builds one snapshot per state change); the output is the same.
    """
    decimals = int(session["decimals"])
    network = Network(session["network"])
    expected = format_units(_units(session["amount_expected"]), decimals)
    return _build(
        SessionSnapshot,
        trusted,
        id=session["id"],
        livemode=Mode(session["mode"]) is Mode.LIVE,
        url=checkout_url(checkout_base_url, session["id"]),
        status=SessionStatus(session["status"]),
        amount=expected,
        amount_expected=expected,
        amount_received=format_units(_units(session["amount_received"]), decimals),
        fee_amount=format_units(_units(session["fee_amount"]), decimals),
        net_amount=format_units(_units(session["net_amount"]), decimals),
        currency=Token(session["currency"]),
        currency_contract=session["currency_contract"],
        network=network,
        chain_family=chain_family(network),
        merchant_name=merchant["name"],
        merchant_logo_url=merchant["logo_url"],
        pay_address=session["pay_address"],
        client_reference_id=session["client_reference_id"],
        pricing=_build(
            PricingSnapshot,
            trusted,
            currency=session["pricing_currency"],
            amount=session["pricing_amount"],
            exchange_rate=_rate(session["exchange_rate"]),
        ),
        success_url=session["success_url"],
        cancel_url=session["cancel_url"],
        sub_merchant_code=sub_merchant_code,
        transactions=tuple(transaction_snapshot(tx, trusted=trusted) for tx in transactions),
        expires_at=_utc(session["expires_at"]),
        created_at=_utc(session["created_at"]),
    )
