"""How far a network × mode is proven silent, from the watcher's per-partition progress markers.

A watcher writes a ``ChainScanned`` marker to every partition of ``chain.transfers`` once the
broker acknowledged every transfer up to a block; the matcher keeps, per partition, the greatest
marker it has consumed (in the same transaction as the transfers before it). Every transfer up
to a block time is consumed only when *every* partition's marker has passed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """The newest progress marker consumed from one partition of ``chain.transfers``."""

    partition: int
    partitions: int
    """The topic's partition count as the watcher saw it when it wrote the marker."""
    block_time: datetime


def chain_time(progress: Iterable[PartitionProgress]) -> datetime | None:
    """The block time up to which every partition's transfers are consumed, or ``None`` while a
    partition has no marker yet.

    The partition count is the largest one any marker carries (a topic only grows), and the
    answer is the smallest block time over partitions ``0 … count - 1``.
    """
    rows = list(progress)
    if not rows:
        return None
    count = max(p.partitions for p in rows)
    times = {p.partition: p.block_time for p in rows if p.partition < count}
    if len(times) < count:
        return None
    return min(times.values())
