"""The SOLANA ``ChainSource``: SPL token deposits to watched owners' associated token accounts.

How a range is answered is in the package docstring (``chains/solana/__init__.py``); here are
the ``ChainSource`` members, the transactions and the blocks.

Blocks: ``getBlocks`` lists the slots that have a block (skipped slots have none), and a
block's hash is ``getBlock(…, transactionDetails: none).blockhash``. A ref's parent hash is
the hash of the previous *listed* block as read here, not the block's ``previousBlockhash``:
Surfpool's synthetic hashes do not link (a block with transactions names a parent hash no block
has), while the hash of one slot stays the same on every read.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from solders.pubkey import Pubkey

from pago.common.enums import Mode, Network, Token
from pago.common.networks import TokenSpec
from pago.watcher.chains.solana.accounts import (
    RETAIN_SLOTS,
    SIGNATURE_PAGE,
    Account,
    AccountBook,
    base58_pubkey,
    signatures_in,
)
from pago.watcher.chains.solana.decode import DecodedTx, decode_transaction, plausible
from pago.watcher.chains.solana.rpc import (
    CONFIRMED,
    INDEX_MARGIN,
    CallBudget,
    RpcStats,
    SolanaNode,
    SolanaRpc,
    genesis_of,
)
from pago.watcher.core.model import BlockRef, ChainHead, Scan, Transfer, block_time
from pago.watcher.core.rpc import EndpointPool, RpcError
from pago.watcher.core.source import WatchView

LISTING_SLOTS = 8192
"""Slots whose block list is remembered (the detect loop's listing serves the confirm loop's
ranges ~32 slots later, and any range of the last hour on mainnet)."""
HEADER_CACHE = 16_384
TX_CACHE = 100_000
LOOKBACK = (64, 4096)
"""Slots searched back for the newest block below a range (skipped slots have none)."""


class Listing:
    """Which slots of one window ``[lo, hi]`` have a block (as ``getBlocks`` listed them).

    Inside the window "no block at s" is known too, which finding the newest block at or below
    a slot needs. A listing that does not touch the window replaces it.
    """

    def __init__(self, capacity: int = LISTING_SLOTS) -> None:
        self.capacity = capacity
        self.lo = 0
        self.hi = -1
        self._slots: list[int] = []

    def covers(self, lo: int, hi: int) -> bool:
        return self.lo <= lo and hi <= self.hi

    def slots(self, lo: int, hi: int) -> list[int]:
        return self._slots[
            bisect.bisect_left(self._slots, lo) : bisect.bisect_right(self._slots, hi)
        ]

    def add(self, lo: int, hi: int, slots: Sequence[int]) -> None:
        if self.hi < self.lo or lo > self.hi + 1 or hi < self.lo - 1:
            self.lo, self.hi, self._slots = lo, hi, sorted(slots)
        else:
            keep = [s for s in self._slots if not lo <= s <= hi]
            self._slots = sorted({*keep, *slots})
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.hi - self.lo + 1 > self.capacity:
            self.lo = self.hi - self.capacity + 1
            del self._slots[: bisect.bisect_left(self._slots, self.lo)]

    def newest_at_or_below(self, slot: int) -> int | None:
        """The newest listed block ≤ ``slot`` inside the window; None if unknown here."""
        if not self.lo <= slot <= self.hi:
            return None
        i = bisect.bisect_right(self._slots, slot)
        return self._slots[i - 1] if i else None


class SolanaSource:
    """SPL token deposits (the registry's mints) to watched owners' ATAs on one network.

    ``balance_hints`` is sound only when the confirmed stage waits for ``finalized`` (the
    factory turns it off otherwise): it answers every range that reaches past the finalized
    slot from balances.
    """

    def __init__(
        self,
        network: Network,
        mode: Mode,
        tokens: Mapping[Token, TokenSpec],
        pool: EndpointPool[SolanaNode],
        *,
        budget: CallBudget | None = None,
        stats: RpcStats | None = None,
        batch_size: int = 100,
        concurrency: int = 8,
        signature_page: int = SIGNATURE_PAGE,
        balance_hints: bool = True,
        retain_slots: int = RETAIN_SLOTS,
    ) -> None:
        if not tokens:
            raise ValueError(f"{network} {mode}: the registry names no token mint")
        if not 1 <= signature_page <= SIGNATURE_PAGE:
            raise ValueError(f"signature_page must be within 1..{SIGNATURE_PAGE}")
        self._network = network
        self._mode = mode
        self._pool = pool
        self._specs = {spec.contract: spec for spec in tokens.values()}
        self._mints = sorted(self._specs)
        self.stats = stats or RpcStats()
        self._rpc = SolanaRpc(
            network.value,
            pool,
            budget or CallBudget(0),
            batch_size=batch_size,
            concurrency=concurrency,
        )
        self._book = AccountBook(
            self._rpc, self._mints, signature_page=signature_page, retain_slots=retain_slots
        )
        self._hints = balance_hints
        self._txs: OrderedDict[str, DecodedTx] = OrderedDict()
        self._headers: OrderedDict[int, tuple[str, str, datetime | None]] = OrderedDict()
        """slot → (blockhash, previousBlockhash, blockTime)."""
        self._clock: OrderedDict[int, datetime | None] = OrderedDict()
        """slot → ``getBlockTime`` where the header's time was not plausible."""
        self._listing = Listing()
        self._finalized = -1

    @classmethod
    def connect(
        cls,
        network: Network,
        mode: Mode,
        tokens: Mapping[Token, TokenSpec],
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        budget: float = 0.0,
        batch_size: int = 100,
        concurrency: int = 8,
        signature_page: int = SIGNATURE_PAGE,
        balance_hints: bool = True,
        genesis_hash: str | None = None,
        **pool_options: Any,
    ) -> SolanaSource:
        """A source over HTTP endpoints ``urls`` (the first is the primary); ``budget``: JSON-RPC
        calls per second over all of them (0: unlimited)."""
        stats = RpcStats()
        nodes = [
            (
                url,
                SolanaNode(
                    url,
                    network.value,
                    stats,
                    timeout=timeout,
                    batch_size=batch_size,
                    concurrency=concurrency,
                ),
            )
            for url in urls
        ]
        pool: EndpointPool[SolanaNode] = EndpointPool.of(
            network.value,
            nodes,
            timeout=timeout,
            identify=genesis_of,
            expected=genesis_hash,
            **pool_options,
        )
        return cls(
            network,
            mode,
            tokens,
            pool,
            budget=CallBudget(budget),
            stats=stats,
            batch_size=batch_size,
            concurrency=concurrency,
            signature_page=signature_page,
            balance_hints=balance_hints,
        )

    # -- identity --------------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return self._network

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def key_size(self) -> int:
        return 32

    @property
    def endpoints(self) -> EndpointPool[SolanaNode]:
        return self._pool

    def address_key(self, address: str) -> bytes:
        try:
            return bytes(Pubkey.from_string(address))
        except ValueError:
            raise ValueError(f"not a Solana address: {address!r}") from None

    def address_text(self, key: bytes) -> str:
        return base58_pubkey(key)

    @property
    def budget(self) -> CallBudget:
        """What every call of this source is paid from (``CallBudget``)."""
        return self._rpc.budget

    @budget.setter
    def budget(self, budget: CallBudget) -> None:
        self._rpc.budget = budget

    def accounts_of(self, owner: bytes) -> tuple[Account, ...]:
        """The followed ATAs of ``owner``, one per registry mint (needs the token programs)."""
        return self._book.accounts_of(owner)

    # -- ChainSource -----------------------------------------------------------------------

    async def head(self, *, finalized: bool = False) -> ChainHead:
        """The confirmed slot less ``INDEX_MARGIN``; the finalized slot is read in the same
        request every time (it bounds what must be final), and returned when asked for.

        The endpoints' heads are these slots too, so a sweep (which takes its endpoint's head
        as the slot it vouches for) never vouches for a slot that may still fill.
        """
        await self._rpc.take(2 * len(self._pool.endpoints))

        async def slots(node: SolanaNode) -> int:
            confirmed, final = await node.calls(
                [("getSlot", [CONFIRMED]), ("getSlot", [{"commitment": "finalized"}])]
            )
            node.finalized = int(final)
            node.vouched = max(node.vouched, int(confirmed) - INDEX_MARGIN)
            return int(confirmed) - INDEX_MARGIN

        latest = await self._pool.refresh_heads(slots)
        best = next(ep for ep in self._pool.endpoints if ep.head == latest)
        final = min(best.client.finalized if best.client.finalized is not None else -1, latest)
        self._finalized = max(self._finalized, final)
        return ChainHead(latest, final) if finalized else ChainHead(latest)

    async def blocks(self, start: int, end: int) -> list[BlockRef]:
        if end < start:
            return []
        slots = await self._list(start, end)
        hashes = await self._headers_of(slots, end)
        refs = []
        previous: str | None = None
        for slot in slots:
            block_hash, parent_hash, _ = hashes[slot]
            if previous is None:
                known = self._listing.newest_at_or_below(slot - 1)
                header = self._headers.get(known) if known is not None else None
                previous = header[0] if header is not None else parent_hash
            refs.append(BlockRef(slot, block_hash, previous))
            previous = block_hash
        return refs

    async def transfers(self, start: int, end: int, watched: WatchView) -> Scan:
        """Every credit in slots ``[start, end]`` to an ATA of an owner in ``watched``.

        A range ending at or below the finalized slot — every range the confirmed stage,
        backfills and re-checks ask for — comes from full signature sweeps; with
        ``balance_hints``, a range reaching past it (the detected stage) from balance hints
        (see the module docstring).
        """
        if end < start:
            raise ValueError(f"empty range [{start}, {end}]")
        slots = await self._list(start, end)
        await self._book.load_programs()
        accounts = self._book.of_watched(watched)
        if accounts and self._hints and end > self._finalized:
            # Only the detected stage asks past the finalized slot (and the reorg handler,
            # which needs the transfers already known): never wait for a sweep here, even for
            # the part of the range that is final by now.
            await self._book.hint(accounts, start, end)
        elif accounts:
            await self._book.verify(accounts, start, end)
        found = signatures_in(accounts, start, end)
        txs = await self._transactions(found, end)
        await self._book.check_final(
            [sig for sig, slot in found.items() if slot <= self._finalized], accounts, end
        )
        wanted = {tx.slot for tx in txs.values() if tx.credits}
        parent = await self._newest_at_or_below(start - 1, end)
        last = slots[-1] if slots else parent
        hashes = await self._headers_of(
            sorted(wanted | ({last} if last is not None else set())), end
        )
        times = await self._times_of(wanted | ({last} if last is not None else set()), end)
        transfers = []
        for sig in sorted(found, key=lambda s: (found[s], s)):
            tx = txs[sig]
            if not tx.ok:
                continue
            if not start <= tx.slot <= end:
                raise RpcError(f"{sig} is in slot {tx.slot}, outside [{start}, {end}]")
            for credit in tx.credits:
                account = self._book.get(credit.account)
                if account is None or account.owner not in watched:
                    continue  # not a followed ATA (another token account of the owner, say)
                if self._mints[account.mint] != credit.mint:
                    continue
                spec = self._specs[credit.mint]
                transfers.append(
                    Transfer(
                        token=spec.symbol,
                        contract=spec.contract,
                        tx_hash=sig,
                        log_index=credit.index,
                        block_number=tx.slot,
                        block_hash=hashes[tx.slot][0],
                        block_time=times[tx.slot],
                        from_address=credit.sender,
                        to_address=self.address_text(account.owner),
                        amount_raw=credit.amount,
                        decimals=spec.decimals,
                    )
                )
        parent_hash = await self._hash_at(parent, end)
        end_hash = hashes[last][0] if last is not None else parent_hash
        end_time = times[last] if last is not None else None
        self._book.prune(self._finalized)
        return Scan(start, end, parent_hash, end_hash, transfers, end_time)

    async def block_time(self, number: int) -> datetime:
        slot = await self._newest_at_or_below(number, number)
        if slot is None:
            raise RpcError(f"no block at or below slot {number}")
        when = (await self._times_of([slot], number))[slot]
        if when is None:
            raise RpcError(f"slot {slot} has no block time")
        return when

    async def check_identity(self) -> None:
        await self._pool.check_identity()

    async def aclose(self) -> None:
        for endpoint in self._pool.endpoints:
            await endpoint.client.aclose()

    # -- transactions ----------------------------------------------------------------------

    async def _transactions(self, found: Mapping[str, int], end: int) -> dict[str, DecodedTx]:
        missing = [sig for sig in found if sig not in self._txs]
        if missing:
            options = {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0, **CONFIRMED}
            answers = await self._rpc.spread(
                [("getTransaction", [sig, options]) for sig in missing],
                method="getTransaction",
                min_head=end,
            )
            mints = frozenset(self._mints)
            for sig, (tx, _) in zip(missing, answers, strict=True):
                if tx is None:
                    raise RpcError(f"getTransaction: the endpoint does not have {sig} yet")
                self._txs[sig] = decode_transaction(tx, mints)
                if len(self._txs) > TX_CACHE:
                    self._txs.popitem(last=False)
        return {sig: self._txs[sig] for sig in found}

    # -- blocks ----------------------------------------------------------------------------

    async def _list(self, start: int, end: int) -> list[int]:
        """Slots of ``[start, end]`` that have a block (raises if the endpoint lacks ``end``)."""
        if not self._listing.covers(start, end):
            slots = await self._rpc.one("getBlocks", [start, end, CONFIRMED], min_head=end)
            self._listing.add(start, end, [int(s) for s in slots])
        return self._listing.slots(start, end)

    async def _headers_of(
        self, slots: Sequence[int], min_head: int
    ) -> dict[int, tuple[str, str, datetime | None]]:
        """(blockhash, previousBlockhash, blockTime) of each slot, cached. ``blockTime`` is the
        validators' stake-weighted clock (unix seconds; null for very old slots), None here when
        it is not a plausible reading (see ``_times_of``)."""
        missing = [s for s in slots if s not in self._headers]
        if missing:
            options = {
                "transactionDetails": "none",
                "rewards": False,
                "maxSupportedTransactionVersion": 0,
                **CONFIRMED,
            }
            answers = await self._rpc.spread(
                [("getBlock", [slot, options]) for slot in missing],
                method="getBlock",
                min_head=min_head,
            )
            for slot, (block, _) in zip(missing, answers, strict=True):
                if block is None:
                    raise RpcError(f"getBlock: the endpoint has no block {slot}")
                stamp = block.get("blockTime")
                self._headers[slot] = (
                    block["blockhash"],
                    block["previousBlockhash"],
                    block_time(int(stamp)) if plausible(stamp) else None,
                )
            while len(self._headers) > HEADER_CACHE:
                self._headers.popitem(last=False)
        return {s: self._headers[s] for s in slots}

    async def _times_of(self, slots: Collection[int], min_head: int) -> dict[int, datetime | None]:
        """Each slot's block time: from its header, else ``getBlockTime`` (cached).

        Surfpool's ``getBlock`` reports ``blockTime`` a thousand times too small (1796185 where
        its ``getBlockTime`` says 1796185479, the wall clock): a time before Solana's genesis is
        no clock reading, so the slot's time is asked for on its own, once.
        """
        headers = await self._headers_of(sorted(slots), min_head)
        times = {s: headers[s][2] for s in slots}
        missing = [s for s, t in times.items() if t is None and s not in self._clock]
        if missing:
            answers = await self._rpc.spread(
                [("getBlockTime", [slot]) for slot in missing],
                method="getBlockTime",
                min_head=min_head,
            )
            for slot, (stamp, _) in zip(missing, answers, strict=True):
                self._clock[slot] = block_time(int(stamp)) if plausible(stamp) else None
            while len(self._clock) > HEADER_CACHE:
                self._clock.popitem(last=False)
        return {s: t if t is not None else self._clock.get(s) for s, t in times.items()}

    async def _newest_at_or_below(self, slot: int, min_head: int) -> int | None:
        """The newest slot ≤ ``slot`` that has a block (None: none in reach, the chain's start)."""
        if slot < 0:
            return None
        known = self._listing.newest_at_or_below(slot)
        if known is not None:
            return known
        for width in LOOKBACK:
            lo = max(0, slot - width + 1)
            slots = await self._rpc.one("getBlocks", [lo, slot, CONFIRMED], min_head=min_head)
            if slots:
                return int(slots[-1])
            if lo == 0:
                return None
        raise RpcError(f"no block in the {LOOKBACK[-1]} slots up to {slot}")

    async def _hash_at(self, slot: int | None, min_head: int) -> str:
        if slot is None:
            return ""
        return (await self._headers_of([slot], min_head))[slot][0]
