"""Values that cross the line between the core and a chain source (no I/O, no chain library).

Heights are "block numbers" here; a slot-based chain (Solana) uses its slots, which may skip
numbers: nothing in the core assumes that every number between two blocks exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pago.common.enums import Token


def block_time(seconds: int | float) -> datetime:
    """A block's timestamp (unix seconds; TRON's milliseconds divided by 1,000) as UTC."""
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class BlockRef:
    """One block as the reorg ring keeps it: its height, its hash and its parent's hash."""

    number: int
    hash: str
    parent_hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """What the chain looks like now, from the best endpoint."""

    latest: int
    finalized: int | None = None
    """The chain's own finality (EVM ``finalized`` tag, TRON solidified block, Solana
    ``finalized`` slot); None when the source was not asked for it or has none."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """A token transfer to a watched address, as the source decoded it.

    Identity is ``(tx_hash, log_index)`` on one network. ``to_address`` is spelled as the api
    stores ``pay_address`` (EIP-55 for EVM), so the matcher can compare strings.
    """

    token: Token
    contract: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    amount_raw: int
    """Base units of ``token``; never a float."""
    decimals: int
    block_time: datetime | None = None
    """The block's own timestamp (UTC): decides whether a payment was made before a session
    expired. None only where the chain gave none."""

    @property
    def identity(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


@dataclass(frozen=True, slots=True)
class Scan:
    """The watched transfers in blocks ``[start, end]``, with the hashes that chain the range
    to the cursor.

    ``parent_hash`` is the hash of the block before ``start`` (the parent of the first block
    in the range): it must equal the cursor's hash, or the chain changed under the cursor.
    ``end_hash`` is the hash of block ``end``, which the cursor records next. A slot chain
    that skipped slots uses the nearest block: the parent of the first block at or after
    ``start``, and the newest block at or before ``end``.
    """

    start: int
    end: int
    parent_hash: str
    end_hash: str
    transfers: list[Transfer]
    end_time: datetime | None = None
    """Timestamp of the block ``end_hash`` names (the cursor's block time, for the progress
    markers); None when the source could not tell (then no marker is written for it)."""
