"""The page's state of a session, and the HTML it renders (escaped, complete without JS)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pago.api.checkout_page.page import render
from pago.api.checkout_page.service import CheckoutPageService, Phase
from pago.common.enums import SessionStatus, TransactionStatus
from pago.common.events import SessionSnapshot, TransactionSnapshot
from pago.common.networks import load_registry
from tests.support.notifier import snapshot

SERVICE = CheckoutPageService(load_registry(), checkout_base_url="https://pay.example/checkout/")


def with_tx(
    session: SessionSnapshot, status: TransactionStatus, confirmations: int
) -> SessionSnapshot:
    tx = TransactionSnapshot(
        tx_hash="ab" * 32,
        amount="10.5",
        network=session.network,
        status=status,
        confirmations=confirmations,
        from_address="TNPeeaaFB7K9cmo4uQpcU32zGK8G1NYqeL",
        created_at=datetime.now(UTC),
    )
    return session.model_copy(update={"transactions": (tx,)})


@pytest.mark.parametrize(
    ("status", "tx", "phase"),
    [
        (SessionStatus.PENDING, None, Phase.WAITING),
        (SessionStatus.PENDING, (TransactionStatus.CONFIRMING, 0), Phase.DETECTED),
        (SessionStatus.PENDING, (TransactionStatus.CONFIRMING, 7), Phase.CONFIRMING),
        (SessionStatus.PENDING, (TransactionStatus.REVERTED, 0), Phase.WAITING),
        (SessionStatus.UNDERPAID, None, Phase.UNDERPAID),
        (SessionStatus.PAID, None, Phase.PAID),
        (SessionStatus.OVERPAID, None, Phase.PAID),
        (SessionStatus.EXPIRED, None, Phase.EXPIRED),
        (SessionStatus.BLOCKED, None, Phase.BLOCKED),
    ],
)
def test_phase(
    status: SessionStatus, tx: tuple[TransactionStatus, int] | None, phase: Phase
) -> None:
    session = snapshot("cs_1", status)
    if tx is not None:
        session = with_tx(session, *tx)
    state = SERVICE.state(session)
    assert state.phase is phase
    assert state.required_confirmations == 19  # TRON


def test_amount_due_and_what_is_left_out() -> None:
    session = snapshot("cs_1", SessionStatus.UNDERPAID).model_copy(
        update={"amount_received": "4.25"}
    )
    state = SERVICE.state(session)
    assert state.amount_due == "6.25"
    assert state.network_name == "TRON (Nile testnet)"
    assert state.payment_uri == session.pay_address
    dumped = state.model_dump()
    for private in ("client_reference_id", "sub_merchant_code", "fee_amount", "transactions"):
        assert private not in dumped
    overpaid = snapshot("cs_1", SessionStatus.OVERPAID).model_copy(update={"amount_received": "12"})
    assert SERVICE.state(overpaid).amount_due == "0"


def test_the_page_escapes_what_the_merchant_wrote() -> None:
    session = snapshot("cs_1", SessionStatus.PENDING).model_copy(
        update={
            "merchant_name": '<script>alert("x")</script>',
            "cancel_url": 'https://shop.example/?a=1&b="2"',
        }
    )
    html = render(SERVICE.state(session), events_url="/v1/checkout/sessions/cs_1/events")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert 'href="https://shop.example/?a=1&amp;b=&quot;2&quot;"' in html
    assert "Waiting for payment" in html
    assert 'data-events-url="/v1/checkout/sessions/cs_1/events"' in html
