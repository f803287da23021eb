"""Reorg handling: a ring of recent block hashes, and the transfers published from them.

The ring holds the newest ``capacity`` blocks the watcher has followed, each linked to its
parent by hash. A block whose parent hash is not the ring's tip hash (or a tip whose hash
changed) means the chain reorganized: ``fork_point`` finds the newest block both chains share,
the ring is cut back to it, and every transfer published from a block above it is looked up
again on the new chain. ``Ledger`` keeps those transfers (detections not yet confirmed, and
confirmations still inside the ring) so the vanished ones can be published as ``reverted``.

Nodes never send ``removed: true`` logs for a reorg they already applied (anvil does not at
all), so the watcher notices reorgs itself, by hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pago.watcher.core.model import BlockRef, Transfer


class ForkDetected(Exception):
    """New blocks do not extend the ring: the chain reorganized at or below ``number``."""

    def __init__(self, number: int) -> None:
        super().__init__(f"parent-hash mismatch at block {number}")
        self.number = number


class BlockRing:
    """The newest ``capacity`` blocks followed, ascending and hash-linked."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("a ring needs room for at least two blocks")
        self.capacity = capacity
        self._refs: dict[int, BlockRef] = {}
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self._order)

    @property
    def tip(self) -> BlockRef | None:
        return self._refs[self._order[-1]] if self._order else None

    @property
    def base(self) -> BlockRef | None:
        return self._refs[self._order[0]] if self._order else None

    def get(self, number: int) -> BlockRef | None:
        return self._refs.get(number)

    def numbers(self) -> list[int]:
        return list(self._order)

    def reset(self) -> None:
        self._refs.clear()
        self._order.clear()

    def extend(self, refs: Sequence[BlockRef]) -> None:
        """Append ``refs`` (ascending, the first one after the tip, or repeating the tip).

        Raises ``ForkDetected`` if they do not continue the ring's chain; nothing is appended
        then. A repeated tip must have the same hash (the tip itself may have been replaced).
        """
        tip = self.tip
        prev = tip
        fresh: list[BlockRef] = []
        for ref in refs:
            if tip is not None and ref.number <= tip.number:
                known = self._refs.get(ref.number)
                if known is not None and known.hash != ref.hash:
                    raise ForkDetected(ref.number)
                continue
            if prev is not None and ref.parent_hash != prev.hash:
                raise ForkDetected(ref.number)
            if prev is not None and ref.number <= prev.number:
                raise ValueError("block refs must ascend")
            fresh.append(ref)
            prev = ref
        for ref in fresh:
            self._refs[ref.number] = ref
            self._order.append(ref.number)
        overflow = len(self._order) - self.capacity
        if overflow > 0:
            for number in self._order[:overflow]:
                del self._refs[number]
            del self._order[:overflow]

    def fork_point(self, canonical: Iterable[BlockRef]) -> int | None:
        """The newest height where the ring and ``canonical`` (refs of the chain as it is now,
        covering the ring's heights) agree; None if they agree nowhere in the ring."""
        now = {ref.number: ref.hash for ref in canonical}
        for number in reversed(self._order):
            if now.get(number) == self._refs[number].hash:
                return number
        return None

    def truncate_after(self, number: int) -> None:
        """Forget every block above ``number``."""
        while self._order and self._order[-1] > number:
            del self._refs[self._order.pop()]


@dataclass
class Ledger:
    """Transfers published from blocks that may still reorganize away.

    ``detected``: published as detected and not yet confirmed or reverted, by identity.
    ``confirmed``: published as confirmed from a block that the ring still holds (a reorg
    deeper than the confirmation depth would take them back); trimmed as the ring moves on.
    """

    detected: dict[tuple[str, int], Transfer] = field(default_factory=dict)
    confirmed: dict[tuple[str, int], Transfer] = field(default_factory=dict)

    def detect(self, transfers: Iterable[Transfer]) -> None:
        for t in transfers:
            self.detected[t.identity] = t

    def confirm(self, transfers: Iterable[Transfer]) -> None:
        for t in transfers:
            key = t.identity
            self.detected.pop(key, None)
            self.confirmed[key] = t

    def detected_in(self, start: int, end: int) -> list[Transfer]:
        return [t for t in self.detected.values() if start <= t.block_number <= end]

    def published_above(self, number: int) -> list[Transfer]:
        """Every transfer still tracked from a block above ``number`` (detected or confirmed)."""
        found = {
            t.identity: t
            for t in (*self.confirmed.values(), *self.detected.values())
            if t.block_number > number
        }
        return list(found.values())

    def forget(self, transfers: Iterable[Transfer]) -> None:
        for t in transfers:
            self.detected.pop(t.identity, None)
            self.confirmed.pop(t.identity, None)

    def trim_confirmed(self, below: int) -> None:
        """Drop confirmations from blocks under ``below`` (the ring no longer covers them)."""
        for key in [k for k, t in self.confirmed.items() if t.block_number < below]:
            del self.confirmed[key]
