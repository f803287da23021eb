"""Which event a chain.transfers record holds: the ``event_type`` header decides."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from pago.common.deadletter import Reason, Rejected
from pago.common.enums import Mode, Network, Token, TransferStage
from pago.common.events import ChainScanned, TransferObserved
from pago.matcher.records import decode, split

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TRANSFER = TransferObserved(
    network=Network.ETHEREUM,
    mode=Mode.TEST,
    token=Token.USDT,
    contract="0xc0",
    tx_hash="0xaa",
    log_index=0,
    block_number=10,
    block_hash="0xbb",
    from_address="0xf0",
    to_address="0x70",
    amount_raw=5,
    decimals=6,
    confirmations=0,
    stage=TransferStage.DETECTED,
    observed_at=NOW,
    block_time=NOW,
)
MARKER = ChainScanned(
    network=Network.ETHEREUM,
    mode=Mode.TEST,
    block_number=10,
    block_hash="0xbb",
    block_time=NOW,
    partition=3,
    partitions=12,
    scanned_at=NOW,
)


def record(
    value: bytes, headers: list[tuple[str, bytes]] | None = None, partition: int = 3
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="chain.transfers",
        partition=partition,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=headers or [],
    )


class TestDecode:
    def test_no_event_type_header_is_a_transfer_from_an_older_watcher(self) -> None:
        assert decode(record(TRANSFER.to_bytes())) == TRANSFER

    def test_a_transfer_by_its_header(self) -> None:
        headers = [("v", b"1"), ("event_type", b"TransferObserved")]
        assert decode(record(TRANSFER.to_bytes(), headers)) == TRANSFER

    @pytest.mark.parametrize("name", [b"ChainScanned", b"chain.scanned"])
    def test_a_progress_marker_by_its_header(self, name: bytes) -> None:
        assert decode(record(MARKER.to_bytes(), [("v", b"1"), ("event_type", name)])) == MARKER

    def test_a_marker_proves_the_partition_it_was_read_from(self) -> None:
        decoded = decode(record(MARKER.to_bytes(), [("event_type", b"ChainScanned")], partition=5))
        assert isinstance(decoded, ChainScanned)
        assert decoded.partition == 5

    def test_an_unknown_event_type_is_rejected_for_the_dead_letter_topic(self) -> None:
        with pytest.raises(Rejected) as rejected:
            decode(record(b"{}", [("event_type", b"SomethingNew")]))
        assert rejected.value.reason is Reason.UNKNOWN_EVENT_TYPE

    def test_a_body_that_is_not_its_header_is_invalid(self) -> None:
        with pytest.raises(Rejected) as rejected:
            decode(record(TRANSFER.to_bytes(), [("event_type", b"ChainScanned")]))
        assert rejected.value.reason is Reason.INVALID

    def test_a_newer_schema_version_is_rejected(self) -> None:
        with pytest.raises(Rejected) as rejected:
            decode(record(MARKER.to_bytes(), [("v", b"2"), ("event_type", b"ChainScanned")]))
        assert rejected.value.reason is Reason.UNSUPPORTED_VERSION


def test_split_keeps_each_kind_in_order() -> None:
    other = MARKER.model_copy(update={"partition": 4})
    assert split([MARKER, TRANSFER, other]) == ([TRANSFER], [MARKER, other])
