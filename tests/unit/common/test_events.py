from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pago.common.enums import Mode, Network, Token, TransferStage
from pago.common.events import TransferObserved, WatchAddress


def _transfer(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "network": "ETHEREUM",
        "mode": "test",
        "token": "USDT",
        "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "tx_hash": "0x" + "ab" * 32,
        "log_index": 3,
        "block_number": 10,
        "block_hash": "0x" + "cd" * 32,
        "from_address": "0x" + "11" * 20,
        "to_address": "0x" + "22" * 20,
        "amount_raw": 2**255,
        "decimals": 6,
        "confirmations": 0,
        "stage": "detected",
        "observed_at": "2026-11-21T12:00:00Z",
    }
    base.update(over)
    return base


class TestTransferObserved:
    def test_round_trips_big_amounts_exactly(self) -> None:
        event = TransferObserved.model_validate(_transfer())
        again = TransferObserved.model_validate_json(event.to_bytes())
        assert again == event
        assert again.amount_raw == 2**255
        assert again.v == 1
        assert again.stage is TransferStage.DETECTED

    def test_is_frozen_and_strict_about_extra_fields(self) -> None:
        event = TransferObserved.model_validate(_transfer())
        with pytest.raises(ValidationError):
            event.amount_raw = 1  # type: ignore[misc]
        with pytest.raises(ValidationError, match="extra"):
            TransferObserved.model_validate(_transfer(memo="x"))

    def test_refuses_negative_amounts(self) -> None:
        with pytest.raises(ValidationError):
            TransferObserved.model_validate(_transfer(amount_raw=-1))


def test_watch_address_serializes_enums_by_value() -> None:
    event = WatchAddress(
        network=Network.TRON,
        mode=Mode.LIVE,
        address="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
        session_id="cs_1",
        watch_until=datetime(2026, 11, 22, tzinfo=UTC),
    )
    assert b'"network":"TRON"' in event.to_bytes()
    assert Token.USDT == "USDT"
