"""Stages of a transfer: ``detected`` near the head, ``confirmed`` once deep enough.

Depth is counted as the registry counts it: ``confirmations`` = blocks on top of the
transfer's block (``head − block``), so with 12 confirmations a transfer in block 100 is
confirmed once the head is 112. With ``use_finalized`` the chain's own finality decides
instead (EVM ``finalized`` tag, TRON solidified block, Solana ``finalized``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pago.watcher.core.model import ChainHead


@dataclass(frozen=True, slots=True)
class StagePolicy:
    confirmations: int
    """Blocks on top of a block before its transfers are ``confirmed``."""
    detect_depth: int | None = 0
    """Blocks on top before a transfer is ``detected`` (0: as soon as it is in the head block);
    None turns the detected stage off."""
    use_finalized: bool = False

    def __post_init__(self) -> None:
        if self.confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        if self.detect_depth is not None and self.detect_depth < 0:
            raise ValueError("detect_depth must be >= 0")

    def confirmable(self, head: ChainHead) -> int:
        """The newest block whose transfers are confirmed at this head."""
        if self.use_finalized:
            if head.finalized is None:
                raise ValueError("the head carries no finalized height")
            return min(head.finalized, head.latest)
        return head.latest - self.confirmations

    def detectable(self, head: ChainHead) -> int | None:
        """The newest block whose transfers are reported as detected (None: stage off)."""
        if self.detect_depth is None:
            return None
        return head.latest - self.detect_depth

    @staticmethod
    def confirmations_of(block_number: int, head: ChainHead) -> int:
        return max(0, head.latest - block_number)
