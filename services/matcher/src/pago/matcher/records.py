"""What a ``chain.transfers`` record is: dispatch on its ``event_type`` header.

Watchers write two kinds of record to ``chain.transfers`` (headers ``v`` and ``event_type``): a
``TransferObserved`` per transfer and a ``ChainScanned`` progress marker per partition. A record
without an ``event_type`` header comes from a watcher older than the markers and is a
``TransferObserved``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord

from pago.common import deadletter
from pago.common.deadletter import Reason, Rejected
from pago.common.events import SCHEMA_VERSION, ChainScanned, TransferObserved

EVENT_TYPE_HEADER = "event_type"
_TRANSFER_TYPES = frozenset({"TransferObserved", "chain.transfer"})
_SCANNED_TYPES = frozenset({"ChainScanned", "chain.scanned"})
"""The class name is what watchers send; the dotted spelling is accepted too (events.py
documents it)."""

ChainRecord = TransferObserved | ChainScanned


def event_type(record: ConsumerRecord[Any, Any]) -> str | None:
    """The record's ``event_type`` header, or ``None`` when it has none."""
    for key, value in record.headers or ():
        if key == EVENT_TYPE_HEADER:
            return bytes(value).decode("utf-8", "replace") if value is not None else None
    return None


def decode(record: ConsumerRecord[Any, Any], *, supported: int = SCHEMA_VERSION) -> ChainRecord:
    """The event in ``record``, or ``Rejected`` (for the dead-letter topic) with the reason: an
    ``event_type`` the matcher does not know, a value that is not the event its header names, or
    a schema version above ``supported``.

    A marker is pinned to the partition it was read from: that partition is what it proves
    consumed, whatever its body says.
    """
    kind = event_type(record)
    if kind is None or kind in _TRANSFER_TYPES:
        return deadletter.decode(record, TransferObserved.model_validate_json, supported=supported)
    if kind in _SCANNED_TYPES:
        marker = deadletter.decode(record, ChainScanned.model_validate_json, supported=supported)
        if marker.partition != record.partition:
            marker = marker.model_copy(update={"partition": record.partition})
        return marker
    raise Rejected(Reason.UNKNOWN_EVENT_TYPE, repr(kind))


def split(records: Sequence[ChainRecord]) -> tuple[list[TransferObserved], list[ChainScanned]]:
    """Transfers and progress markers of a batch, each in the batch's order."""
    transfers = [r for r in records if isinstance(r, TransferObserved)]
    markers = [r for r in records if isinstance(r, ChainScanned)]
    return transfers, markers
