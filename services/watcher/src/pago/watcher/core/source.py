"""The ``ChainSource`` protocol: everything the core needs from one chain, and nothing more.

The core (scanner, stages, cursor, reorg ring, leadership, publishing, metrics) drives a source
through these members; a new chain family (TRON, Solana) implements them under ``chains/``
(``chains/<family>.py``, or a package ``chains/<family>/`` as Solana's) and registers a builder
in ``chains/factory.py``. The protocol lives here, in the core, so that the core imports no
chain module (an import-linter contract in the root ``pyproject.toml``). Heights are block
numbers or slots; a source may skip numbers (Solana's skipped slots) as long as ``blocks``
returns the blocks that exist, in ascending order, each naming its parent's hash.

Contract of ``transfers`` (what keeps the cursor honest):

- It returns *every* transfer in ``[start, end]`` to a key in ``watched`` (of the registry's
  tokens only, successful transactions only), or it raises. An empty list must mean "none",
  never "the node did not have those blocks": a source checks that its endpoint has block
  ``end`` (``EndpointPool.call(min_head=end)`` and, for EVM, the block itself in the same batch).
- ``RangeTooLarge`` asks the core to split the range; any other exception is retried (on
  another endpoint, then after a backoff) and the range is never skipped.
- ``watched`` may be the whole watch set (a ``WatchSet``) or a small ``frozenset`` of keys
  (addresses that arrived late and are looked up over blocks already scanned); a source may
  use the small case for a targeted query (EVM: the ``to`` topic) and must filter locally
  otherwise.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol, runtime_checkable

from pago.common.enums import Mode, Network
from pago.watcher.core.model import BlockRef, ChainHead, Scan

__all__ = ["ChainSource", "EndpointStatus", "WatchView"]

WatchView = Collection[bytes]
"""Keys to report transfers to: ``key in view``, ``len(view)``, ``iter(view)``."""


class EndpointStatus(Protocol):
    """What the core reads of a source's endpoints (``core.rpc.EndpointPool`` provides it)."""

    @property
    def chain_stalled(self) -> bool: ...

    def describe(self) -> list[dict[str, object]]: ...


@runtime_checkable
class ChainSource(Protocol):
    @property
    def network(self) -> Network: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def key_size(self) -> int:
        """Bytes of an address key: 20 (EVM, TRON), 32 (Solana)."""
        ...

    @property
    def endpoints(self) -> EndpointStatus:
        """The source's endpoints (an ``EndpointPool``), for health and status."""
        ...

    def address_key(self, address: str) -> bytes:
        """The canonical key of ``address`` as the api wrote it (raise ``ValueError`` if it is
        not an address of this chain). EVM: the 20 bytes, whatever the letter case."""
        ...

    def address_text(self, key: bytes) -> str:
        """``key`` spelled as the api stores ``pay_address`` (EVM: EIP-55 checksummed)."""
        ...

    async def head(self, *, finalized: bool = False) -> ChainHead:
        """The best head over every endpoint (stale ones flagged in ``pool``); with
        ``finalized``, also the chain's finalized height (``ChainHead.finalized``)."""
        ...

    async def blocks(self, start: int, end: int) -> list[BlockRef]:
        """Refs of the blocks in ``[start, end]`` that exist, ascending (raise if the endpoint
        does not have ``end`` yet)."""
        ...

    async def transfers(self, start: int, end: int, watched: WatchView) -> Scan:
        """Every transfer in blocks ``[start, end]`` to a key in ``watched`` (see above)."""
        ...

    async def block_time(self, number: int) -> datetime:
        """The timestamp of block ``number`` (of the newest block at or below it where numbers
        skip), UTC: how a back-fill finds the block at a session's creation."""
        ...

    async def check_identity(self) -> None:
        """Ask every endpoint which chain it serves (EVM ``eth_chainId``, TRON's genesis block
        id, Solana's genesis hash) and refuse those on another chain than the registry names;
        raise ``WrongChain`` if none is on the right one (see ``core.rpc``)."""
        ...

    async def aclose(self) -> None:
        """Close the endpoints' connections."""
        ...
