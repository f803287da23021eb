"""Simulated transfers: what a watcher would publish, built from the session (no chain)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.addresses.codec import AddressError, normalize_address, random_address, random_tx_hash
from pago.api.auth.principal import Principal
from pago.api.errors import InvalidRequest, TestModeOnly
from pago.api.sessions.service import SessionService
from pago.api.test_helpers.schemas import SimulateTransferRequest
from pago.common.enums import Mode, Token, TransferStage
from pago.common.events import TransferObserved
from pago.common.money import MoneyError, parse_units
from pago.common.networks import Registry


class TestHelperService:
    """The test helpers: what a watcher would publish, built from the session (no chain)."""

    __test__ = False  # pytest would collect a Test* class that a test module imports

    def __init__(self, *, sessions: SessionService, registry: Registry) -> None:
        self._sessions = sessions
        self._registry = registry

    async def simulated_transfer(
        self,
        conn: AsyncConnection,
        principal: Principal,
        session_id: str,
        body: SimulateTransferRequest,
    ) -> TransferObserved:
        """The ``TransferObserved`` a watcher would publish for a payment to the session."""
        if principal.mode is not Mode.TEST:
            raise TestModeOnly("Test helpers are available with test-mode keys (sk_test_…) only.")
        session = await self._sessions.find_for_helper(conn, principal, session_id)
        spec = self._registry.network(session.network)
        try:
            amount = parse_units(body.amount, session.decimals)
        except MoneyError as exc:
            raise InvalidRequest(f"amount: {exc}.", param="amount") from None
        if amount <= 0:
            raise InvalidRequest("amount must be greater than 0.", param="amount")
        if body.from_address is None:
            sender = random_address(spec.family)
        else:
            try:
                sender = normalize_address(spec.family, body.from_address)
            except AddressError as exc:
                raise InvalidRequest(f"from_address: {exc}.", param="from_address") from None
        confirmed = body.stage is TransferStage.CONFIRMED
        return TransferObserved(
            network=session.network,
            mode=Mode.TEST,
            token=Token(session.currency),
            contract=session.currency_contract,
            tx_hash=random_tx_hash(spec.family),
            log_index=0,
            # A synthetic block height that only grows, like a chain's.
            block_number=time.time_ns() // 1_000_000,
            block_hash=random_tx_hash(spec.family),
            from_address=sender,
            to_address=session.pay_address,
            amount_raw=amount,
            decimals=session.decimals,
            confirmations=spec.confirmations_for(Mode.TEST) if confirmed else 0,
            stage=body.stage,
            observed_at=datetime.now(UTC),
        )
