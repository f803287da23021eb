"""A provider status read as the notification the inbox stores (the reconciliation pass)."""

from __future__ import annotations

from datetime import UTC, datetime

from pago.api.cards.providers.base import ProviderStatus
from pago.api.cards.service import reconciled_notification
from pago.common.enums import CardProvider, CardSessionStatus

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def test_one_inbox_entry_per_reference_and_outcome() -> None:
    paid = ProviderStatus("5O190127TN364715T", "COMPLETED", CardSessionStatus.COMPLETED)
    declined = ProviderStatus("5O190127TN364715T", "COMPLETED", CardSessionStatus.FAILED)

    first = reconciled_notification(CardProvider.PAYPAL, "sid", paid, NOW)
    again = reconciled_notification(CardProvider.PAYPAL, "sid", paid, NOW.replace(hour=13))
    other = reconciled_notification(CardProvider.PAYPAL, "sid", declined, NOW)

    assert first.event_id == again.event_id == "reconcile:5O190127TN364715T:COMPLETED"
    assert other.event_id != first.event_id  # same raw status, another outcome


def test_it_carries_the_outcome_and_the_providers_status_word() -> None:
    note = reconciled_notification(
        CardProvider.STRIPE,
        "sid",
        ProviderStatus("cs_test_1", "complete", CardSessionStatus.COMPLETED),
        NOW,
    )

    assert (note.provider, note.reference, note.session_id) == (
        CardProvider.STRIPE,
        "cs_test_1",
        "sid",
    )
    assert note.outcome is CardSessionStatus.COMPLETED
    assert note.event_type == "reconcile:complete"
