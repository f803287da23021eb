"""Adaptive block-range sizing for range queries (``eth_getLogs`` and the like).

Providers cap a range by blocks, by results or by time, and the caps differ per provider and
per moment. The sizer shrinks on a refusal or a timeout and grows back while queries are calm,
so a watcher finds the largest range its endpoints accept without being told.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RangeSizer:
    """How many blocks the next range query spans.

    ``refused`` halves the size (a provider limit or a timeout); ``succeeded`` grows it by half
    when the query was fast (under ``calm_seconds``) and shrinks it by a quarter when it was
    slow, so a range settles where one query takes about ``calm_seconds``.
    """

    initial: int
    maximum: int
    minimum: int = 1
    calm_seconds: float = 2.0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.size = min(max(self.initial, self.minimum), self.maximum)

    def refused(self, span: int) -> int:
        """A query over ``span`` blocks was refused as too large: the size for a retry."""
        self.size = max(self.minimum, min(self.size, span) // 2)
        return self.size

    def succeeded(self, span: int, seconds: float) -> None:
        if seconds > self.calm_seconds * 2:
            self.size = max(self.minimum, (min(self.size, span) * 3) // 4)
        elif seconds < self.calm_seconds and span >= self.size:
            # Grow only after a full-size range: a short tail range says nothing about the cap.
            self.size = min(self.maximum, max(self.size + 1, (self.size * 3) // 2))
