import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pago.common.enums import Mode, Network, Token, TransferStage
from pago.common.events import TransactionSnapshot, TransferObserved, WatchAddress


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

    def test_is_frozen(self) -> None:
        event = TransferObserved.model_validate(_transfer())
        with pytest.raises(ValidationError):
            event.amount_raw = 1  # type: ignore[misc]

    def test_reads_a_newer_producers_added_field_and_drops_it(self) -> None:
        # A rolling deploy: the new watcher adds a field the old matcher does not know.
        event = TransferObserved.model_validate_json(
            json.dumps(_transfer(memo="x", fee={"raw": 1}))
        )
        assert event == TransferObserved.model_validate(_transfer())
        assert b"memo" not in event.to_bytes()

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


def test_nested_snapshots_read_added_fields_too() -> None:
    snapshot = {
        "tx_hash": "0x" + "ab" * 32,
        "amount": "1.5",
        "network": "ETHEREUM",
        "status": "Confirmed",
        "confirmations": 12,
        "from_address": "0x" + "11" * 20,
        "created_at": "2026-11-21T12:00:00Z",
        "gas_used": 21000,
    }
    parsed = TransactionSnapshot.model_validate(snapshot)
    assert parsed.amount == "1.5"
    assert "gas_used" not in parsed.model_dump()
