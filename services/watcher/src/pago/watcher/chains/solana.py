"""The SOLANA ``ChainSource``: SPL token deposits to watched owners' associated token accounts.

A deposit address is an owner pubkey (from an imported pool). Payments land in the owner's
associated token account (ATA) of each registry mint, derived from owner + token program +
mint (the program is read from the mint account once: SPL Token or Token-2022). The owner
itself appears in no ``transfer_checked``, so the ATAs are what is followed.

How a slot range ``[start, end]`` is answered (the core drives it like EVM blocks):

1. **Signatures** per ATA with ``getSignaturesForAddress(ATA, until=<newest known>)``, paged
   with ``before`` past the page size (1,000), at ``confirmed`` commitment. Each ATA remembers
   the slot through which its list is complete (``verified``: the slot its endpoint had
   vouched for when the newest page was asked for) and from which (``complete_from``), so a
   range another loop already swept costs nothing, and one sweep serves every range up to it.
   A node vouches for its confirmed slot less ``INDEX_MARGIN`` (2): Surfpool's confirmed slot
   can still take transactions, and Agave indexes transaction statuses asynchronously. The
   source's head is that slot too, and a poll keeps no signature above it, so ``until`` only
   ever names a signature below which nothing can still appear.
2. **Transactions** (``getTransaction``, ``jsonParsed``, cached per signature): the credit is
   the ATA's post − pre token balance for a registry mint (pre is 0 when the ATA was created
   in the same transaction); the sender is the owner of the token account of that mint whose
   balance fell the most (the fee payer if none fell, e.g. a mint). Failed transactions and
   debits are ignored; token accounts other than the followed ATAs are never credited.
3. **Finality**: every signature in a slot at or below the finalized slot must have
   ``getSignatureStatuses`` = ``finalized`` (Surfpool's ``getSignaturesForAddress`` ignores
   ``commitment: finalized``, so the list itself cannot be trusted to say it).

The cost that matters is step 1: one call per ATA per sweep, and with ``confirmed`` at
``finalized`` the core asks for a range reaching past the finalized slot on every head poll
(the detected stage). With ``balance_hints`` those ranges are answered from the ATAs' token
balances instead: ``getMultipleAccounts`` (100 ATAs a call, 8 bytes of each: the amount) and a
signature poll of only the ATAs whose balance moved (and, once more, until their signatures
cover the slot the new balance was seen at). A balance can move and come back between
two reads (a deposit swept out at once): such a transfer is missed by the *detected* stage
only, because a range ending at or below the finalized slot — the confirmed stage, backfills,
re-checks — is always answered from full signature sweeps. Sweeps run at bulk priority
(``PriorityGate``) so detection never queues behind one, and every call is paid for from one
``CallBudget``. ``docs/solana-watcher.md`` has the numbers.

Identity: ``tx_hash`` is the signature (base58); ``log_index`` is the index of the credited ATA
in the transaction's account keys (static keys, then loaded writable, then loaded read-only
addresses, as ``jsonParsed`` lists them), which every fetch of the transaction gives alike. One
transaction crediting one ATA twice is one transfer of the net amount.

Blocks: ``getBlocks`` lists the slots that have a block (skipped slots have none), and a
block's hash is ``getBlock(…, transactionDetails: none).blockhash``. A ref's parent hash is
the hash of the previous *listed* block as read here, not the block's ``previousBlockhash``:
Surfpool's synthetic hashes do not link (a block with transactions names a parent hash no block
has), while the hash of one slot stays the same on every read.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import logging
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from pago.common.enums import Mode, Network, Token
from pago.common.networks import TokenSpec
from pago.watcher.chains.solana_rpc import (
    BUDGET_WAIT,
    Call,
    CallBudget,
    PriorityGate,
    RpcStats,
    SolanaNode,
)
from pago.watcher.core.model import BlockRef, ChainHead, Scan, Transfer, block_time
from pago.watcher.core.rpc import EndpointPool, RpcError
from pago.watcher.core.source import WatchView
from pago.watcher.core.watch_set import WatchSet

log = logging.getLogger(__name__)

SIGNATURE_PAGE = 1000
"""``getSignaturesForAddress`` returns at most this many signatures a call."""
ACCOUNTS_PER_CALL = 100
"""``getMultipleAccounts`` takes at most this many accounts a call."""
STATUSES_PER_CALL = 256
"""``getSignatureStatuses`` takes at most this many signatures a call."""
AMOUNT_SLICE = {"offset": 64, "length": 8}
"""The token account's ``amount`` (u64 LE after mint and owner), the same in Token-2022."""
LISTING_SLOTS = 8192
"""Slots whose block list is remembered (the detect loop's listing serves the confirm loop's
ranges ~32 slots later, and any range of the last hour on mainnet)."""
HEADER_CACHE = 16_384
TX_CACHE = 100_000
FINAL_CACHE = 200_000
RETAIN_SLOTS = 20_000
"""Signatures older than this many slots below the finalized slot are forgotten (~2.2 h on
mainnet): far more than a backfill looks back; an older range is swept again."""
LOOKBACK = (64, 4096)
"""Slots searched back for the newest block below a range (skipped slots have none)."""
TOKEN_PROGRAMS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
INDEX_MARGIN = 2
"""Slots below the confirmed slot before the source vouches for one: Surfpool's confirmed slot
can still take transactions (23 of 60 deposits sent in one second landed in a slot after it was
first read), and Agave writes transaction statuses (what ``getSignaturesForAddress`` reads)
asynchronously. 0.8 s on mainnet."""
URGENT, BULK = 0, 1
"""Gate priorities: the head, blocks, balance hints and what they trigger go before the
signature sweeps behind the confirmed stage."""
_CONFIRMED = {"commitment": "confirmed"}


@lru_cache(maxsize=1 << 16)
def base58_pubkey(key: bytes) -> str:
    """The base58 spelling of a 32-byte pubkey (what the api stores as ``pay_address``)."""
    return str(Pubkey.from_bytes(key))


def associated_token_account(owner: bytes, mint: Pubkey, program: Pubkey) -> str:
    return str(get_associated_token_address(Pubkey.from_bytes(owner), mint, program))


@dataclass(frozen=True, slots=True)
class Credit:
    """One token account's net gain of one registry mint in one transaction."""

    index: int
    """The account's index in the transaction's account keys (the transfer's log_index)."""
    account: str
    mint: str
    amount: int
    """Base units (post − pre); never a float."""
    sender: str


@dataclass(frozen=True, slots=True)
class DecodedTx:
    slot: int
    ok: bool
    credits: tuple[Credit, ...]


def decode_transaction(tx: Mapping[str, Any], mints: Collection[str]) -> DecodedTx:
    """The registry-mint credits of a ``getTransaction`` (``jsonParsed``) answer."""
    slot = int(tx["slot"])
    meta = tx.get("meta") or {}
    if meta.get("err") is not None:
        return DecodedTx(slot, False, ())
    keys = [k["pubkey"] if isinstance(k, dict) else str(k) for k in _account_keys(tx)]
    amounts: dict[int, list[int]] = {}
    mint_of: dict[int, str] = {}
    owner_of: dict[int, str] = {}
    for phase, entries in enumerate((meta.get("preTokenBalances"), meta.get("postTokenBalances"))):
        for entry in entries or ():
            mint = entry.get("mint")
            if mint not in mints:
                continue
            index = int(entry["accountIndex"])
            amounts.setdefault(index, [0, 0])[phase] = int(entry["uiTokenAmount"]["amount"])
            mint_of[index] = mint
            if entry.get("owner"):
                owner_of[index] = entry["owner"]
    credits = []
    for index, (pre, post) in sorted(amounts.items()):
        if post <= pre:
            continue
        mint = mint_of[index]
        fell = [
            (before - after, -other)
            for other, (before, after) in amounts.items()
            if mint_of[other] == mint and after < before
        ]
        if fell:
            payer = -max(fell)[1]
            sender = owner_of.get(payer, keys[payer])
        else:
            sender = keys[0]  # nothing fell (a mint): the fee payer sent it
        credits.append(Credit(index, keys[index], mint, post - pre, sender))
    return DecodedTx(slot, True, tuple(credits))


def _account_keys(tx: Mapping[str, Any]) -> list[Any]:
    message = tx["transaction"]["message"]
    keys = list(message["accountKeys"])
    if keys and isinstance(keys[0], dict):
        return keys  # jsonParsed lists loaded addresses too, in order
    loaded = (tx.get("meta") or {}).get("loadedAddresses") or {}
    return keys + list(loaded.get("writable", ())) + list(loaded.get("readonly", ()))


@dataclass(slots=True, eq=False)
class Account:
    """One followed ATA and what is known of its signatures.

    ``sigs`` holds every signature of the account in slots ``[complete_from, verified]``
    (and perhaps newer ones): signature → (slot, succeeded). ``verified`` is -1 until the
    first poll. ``hinted``: the newest slot at which its balance was read unchanged.
    """

    address: str
    owner: bytes
    mint: int
    sigs: dict[str, tuple[int, bool]] = field(default_factory=dict)
    newest: str | None = None
    newest_slot: int = -1
    verified: int = -1
    complete_from: int = 0
    hinted: int = -1
    amount: int | None = None
    amount_read: bool = False
    amount_at: int = -1
    """The slot at which ``amount`` was first seen: signatures are owed up to it."""

    def covers(self, low: int, high: int) -> bool:
        return self.verified >= high and self.complete_from <= low


@dataclass(slots=True, eq=False)
class _Poll:
    """One account's signature poll in progress (pages newest-first)."""

    account: Account
    incremental: bool
    """From the newest known signature down to ``verified`` (else from the top down to the
    range's start)."""
    stop: int
    """Slots at or below this are known already: a page reaching one ends the poll."""
    until: str | None
    before: str | None = None
    reference: int | None = None
    found: list[tuple[str, int, bool]] = field(default_factory=list)

    def params(self, page: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": page, **_CONFIRMED}
        if self.until is not None:
            params["until"] = self.until
        if self.before is not None:
            params["before"] = self.before
        return params


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


async def genesis_of(node: SolanaNode) -> str:
    """The endpoint's ``getGenesisHash``: which cluster it serves."""
    (genesis,) = await node.calls([("getGenesisHash", [])])
    return str(genesis)


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
        self._mint_keys = [Pubkey.from_string(m) for m in self._mints]
        self._programs: list[Pubkey] | None = None
        self.budget = budget or CallBudget(0)
        self.stats = stats or RpcStats()
        self._batch_size = batch_size
        self._gate = PriorityGate(concurrency)
        self._page = signature_page
        self._hints = balance_hints
        self._retain = retain_slots
        self._owners: dict[bytes, tuple[Account, ...]] = {}
        self._accounts: dict[str, Account] = {}
        self._txs: OrderedDict[str, DecodedTx] = OrderedDict()
        self._final: set[str] = set()
        self._headers: OrderedDict[int, tuple[str, str, datetime | None]] = OrderedDict()
        """slot → (blockhash, previousBlockhash, blockTime)."""
        self._clock: OrderedDict[int, datetime | None] = OrderedDict()
        """slot → ``getBlockTime`` where the header's time was not plausible."""
        self._listing = Listing()
        self._finalized = -1
        self._pruned_at = -1
        self._verify_lock = asyncio.Lock()
        self._heads = {id(ep.client): ep for ep in pool.endpoints}
        self._m_wait = BUDGET_WAIT.labels(network.value)

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

    def accounts_of(self, owner: bytes) -> tuple[Account, ...]:
        """The followed ATAs of ``owner``, one per registry mint (needs the token programs)."""
        accounts = self._owners.get(owner)
        if accounts is None:
            if self._programs is None:
                raise RuntimeError("the mints' token programs are not known yet")
            accounts = tuple(
                Account(associated_token_account(owner, mint, program), owner, i)
                for i, (mint, program) in enumerate(
                    zip(self._mint_keys, self._programs, strict=True)
                )
            )
            self._owners[owner] = accounts
            for account in accounts:
                self._accounts[account.address] = account
        return accounts

    # -- RPC -------------------------------------------------------------------------------

    async def _take(self, calls: int) -> None:
        waited = await self.budget.take(calls)
        if waited:
            self._m_wait.inc(waited)

    def _head_of(self, node: SolanaNode) -> int:
        endpoint = self._heads.get(id(node))
        head = endpoint.head if endpoint is not None and endpoint.head is not None else -1
        return max(head, node.vouched)

    async def _send(
        self, chunk: Sequence[Call], method: str, min_head: int | None, priority: int
    ) -> tuple[list[Any], int]:
        async def op(node: SolanaNode) -> tuple[list[Any], int]:
            # Read before the calls: everything up to it is complete in their answers.
            head = self._head_of(node)
            results = await node.calls(chunk)
            for result in results:
                if isinstance(result, dict) and isinstance(result.get("context"), dict):
                    slot = int(result["context"].get("slot", -1)) - INDEX_MARGIN
                    node.vouched = max(node.vouched, slot)
            return results, head

        async with self._gate.slot(priority):
            return await self._pool.call(op, method=method, min_head=min_head)

    def _chunk_size(self) -> int:
        """Calls per request: a batch, or one call where the primary refuses batches (a
        100-call chunk of single calls would wait for itself inside the endpoint's timeout)."""
        primary = self._pool.endpoints[0].client
        return 1 if primary.takes_batches is False else self._batch_size

    async def _spread(
        self,
        calls: Sequence[Call],
        *,
        method: str,
        min_head: int | None = None,
        priority: int = URGENT,
    ) -> list[tuple[Any, int]]:
        """Each call's result with the confirmed head of the endpoint that answered it.

        Requests are paid for one at a time as they leave, so a call of another loop waits
        behind at most one request of a long sweep for its budget, and not at all for a slot
        (``priority``).
        """
        size = self._chunk_size()
        tasks: list[asyncio.Task[tuple[list[Any], int]]] = []
        try:
            for lo in range(0, len(calls), size):
                chunk = calls[lo : lo + size]
                await self._take(len(chunk))
                tasks.append(asyncio.create_task(self._send(chunk, method, min_head, priority)))
            answers = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [(result, head) for results, head in answers for result in results]

    async def _one(self, method: str, params: list[Any], min_head: int | None = None) -> Any:
        ((result, _),) = await self._spread([(method, params)], method=method, min_head=min_head)
        return result

    async def _load_programs(self) -> list[Pubkey]:
        """Each mint's token program (SPL Token or Token-2022), read once from the mints."""
        if self._programs is not None:
            return self._programs
        answer = await self._one(
            "getMultipleAccounts",
            [self._mints, {"encoding": "base64", "dataSlice": {"offset": 0, "length": 0}}],
        )
        programs = []
        for mint, value in zip(self._mints, answer["value"], strict=True):
            if value is None:
                raise RpcError(f"mint {mint} does not exist on this cluster")
            program = Pubkey.from_string(value["owner"])
            if program not in TOKEN_PROGRAMS:
                raise RpcError(f"{mint} is owned by {program}, not a token program")
            programs.append(program)
        self._programs = programs
        return programs

    # -- ChainSource -----------------------------------------------------------------------

    async def head(self, *, finalized: bool = False) -> ChainHead:
        """The confirmed slot less ``INDEX_MARGIN``; the finalized slot is read in the same
        request every time (it bounds what must be final), and returned when asked for.

        The endpoints' heads are these slots too, so a sweep (which takes its endpoint's head
        as the slot it vouches for) never vouches for a slot that may still fill.
        """
        await self._take(2 * len(self._pool.endpoints))

        async def slots(node: SolanaNode) -> int:
            confirmed, final = await node.calls(
                [("getSlot", [_CONFIRMED]), ("getSlot", [{"commitment": "finalized"}])]
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
        await self._load_programs()
        accounts = self._accounts_for(watched)
        if accounts and self._hints and end > self._finalized:
            # Only the detected stage asks past the finalized slot (and the reorg handler,
            # which needs the transfers already known): never wait for a sweep here, even for
            # the part of the range that is final by now.
            await self._hint(accounts, start, end)
        elif accounts:
            await self._verify(accounts, start, end)
        found = self._signatures_in(accounts, start, end)
        txs = await self._transactions(found, end)
        await self._check_final(
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
                account = self._accounts.get(credit.account)
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
        self._prune()
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

    # -- accounts and signatures -----------------------------------------------------------

    def _accounts_for(self, watched: WatchView) -> list[Account]:
        accounts: list[Account] = []
        for owner in watched:
            accounts.extend(self.accounts_of(owner))
        if isinstance(watched, WatchSet) and len(self._owners) > 2 * len(watched) + 1024:
            # Owners the watch set evicted (expired sessions): forget their accounts.
            self._owners = {o: a for o, a in self._owners.items() if o in watched}
            self._accounts = {a.address: a for accs in self._owners.values() for a in accs}
        return accounts

    async def _verify(self, accounts: Sequence[Account], low: int, high: int) -> None:
        """Make every account's signature list complete over ``[low, high]``.

        One sweep at a time: the confirm loop fetches several ranges at once, and the first
        sweep (to the endpoint's head) usually covers the others.
        """
        async with self._verify_lock:
            stale = [a for a in accounts if not a.covers(low, high)]
            if stale:
                await self._poll(stale, low, high, priority=BULK)

    async def _hint(self, accounts: Sequence[Account], low: int, high: int) -> None:
        """Read the balances of accounts not read through ``high``; poll the signatures of
        those whose balance moved since it was last seen, or that still owe a poll.

        A balance read at slot C shows transfers up to C, but only slots up to
        C − ``INDEX_MARGIN`` are complete: a poll right after it vouches for no more. So an
        account remembers the slot at which its balance took its current value
        (``amount_at``) and is polled again until its signatures cover that slot — else a
        deposit in the last slots would be in the balance and never fetched.

        Every account is read on every pass, swept ones too, so each comparison spans only
        the time between two reads. A first read has nothing to compare with: the account is
        polled if its ATA exists (paid before it was first read); 10,000 new owners, whose ATAs
        do not exist yet, cost 100 calls and no poll.
        """
        stale = [a for a in accounts if a.hinted < high]
        if not stale:
            return
        chunks = [stale[i : i + ACCOUNTS_PER_CALL] for i in range(0, len(stale), ACCOUNTS_PER_CALL)]
        options = {"encoding": "base64", "dataSlice": AMOUNT_SLICE, **_CONFIRMED}
        answers = await self._spread(
            [("getMultipleAccounts", [[a.address for a in chunk], options]) for chunk in chunks],
            method="getMultipleAccounts",
            min_head=high,
        )
        reads: list[tuple[Account, int | None, int, bool]] = []
        for chunk, (answer, _) in zip(chunks, answers, strict=True):
            at = int(answer["context"]["slot"])
            if at - INDEX_MARGIN < high:
                raise RpcError(f"balances read at slot {at}, before {high + INDEX_MARGIN}")
            for account, value in zip(chunk, answer["value"], strict=True):
                amount = None if value is None else _amount(value)
                # A first read has nothing to compare with: an existing ATA may hold a deposit.
                moved = amount != account.amount if account.amount_read else amount is not None
                reads.append((account, amount, at, moved))
        owing = [a for a, _, at, moved in reads if moved or a.verified < a.amount_at]
        if owing:
            await self._poll(owing, low, high)
        # Only now: a poll that failed must find the same balances moved next time.
        for account, amount, at, moved in reads:
            if moved or not account.amount_read:
                account.amount, account.amount_read = amount, True
                account.amount_at = at if amount is not None else -1
            account.hinted = max(account.hinted, at - INDEX_MARGIN)

    async def _poll(
        self, accounts: Sequence[Account], low: int, min_head: int, *, priority: int = URGENT
    ) -> None:
        """Page each account's signatures, newest first, down to what is known (or to ``low``).

        An account known over ``[complete_from, verified]`` with ``complete_from <= low`` asks
        only for what is newer than its newest signature (``until``: one empty answer when
        idle); any other is read from the top down to ``low``.
        """
        polls = []
        for a in accounts:
            incremental = a.verified >= 0 and a.complete_from <= low
            polls.append(
                _Poll(
                    a,
                    incremental,
                    stop=a.verified if incremental else low - 1,
                    until=a.newest if incremental else None,
                )
            )
        pending = polls
        while pending:
            calls = [
                ("getSignaturesForAddress", [p.account.address, p.params(self._page)])
                for p in pending
            ]
            answers = await self._spread(
                calls, method="getSignaturesForAddress", min_head=min_head, priority=priority
            )
            more = []
            for p, (entries, head) in zip(pending, answers, strict=True):
                if not isinstance(entries, list):
                    raise RpcError(f"getSignaturesForAddress answered {str(entries)[:200]}")
                if p.reference is None:
                    p.reference = head
                reached = False
                for entry in entries:
                    slot = int(entry["slot"])
                    if slot <= p.stop:
                        reached = True
                    elif entry.get("confirmationStatus") != "processed":
                        p.found.append((entry["signature"], slot, entry.get("err") is None))
                if entries and len(entries) >= self._page and not reached:
                    p.before = entries[-1]["signature"]
                    more.append(p)
            pending = more
        for p in polls:
            _merge(p, low)

    def _signatures_in(self, accounts: Sequence[Account], start: int, end: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for account in accounts:
            for sig, (slot, ok) in account.sigs.items():
                if ok and start <= slot <= end:
                    found[sig] = slot
        return found

    async def _transactions(self, found: Mapping[str, int], end: int) -> dict[str, DecodedTx]:
        missing = [sig for sig in found if sig not in self._txs]
        if missing:
            options = {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0, **_CONFIRMED}
            answers = await self._spread(
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

    async def _check_final(
        self, sigs: Sequence[str], accounts: Sequence[Account], end: int
    ) -> None:
        """Raise unless every one of ``sigs`` (all in finalized slots) is ``finalized``.

        An unknown signature is dropped from its accounts, which are polled from scratch on
        the retry: a transaction that is not on the chain any more must not be confirmed.
        """
        unknown = [sig for sig in sigs if sig not in self._final]
        if not unknown:
            return
        calls: list[Call] = [
            (
                "getSignatureStatuses",
                [unknown[i : i + STATUSES_PER_CALL], {"searchTransactionHistory": True}],
            )
            for i in range(0, len(unknown), STATUSES_PER_CALL)
        ]
        answers = await self._spread(calls, method="getSignatureStatuses", min_head=end)
        statuses = [status for answer, _ in answers for status in answer["value"]]
        pending, gone = [], set()
        for sig, status in zip(unknown, statuses, strict=True):
            if status is None:
                gone.add(sig)
            elif status.get("confirmationStatus") == "finalized":
                self._final.add(sig)
            else:
                pending.append(sig)
        if len(self._final) > FINAL_CACHE:
            self._final.clear()
        if gone:
            for account in accounts:
                if gone.intersection(account.sigs):
                    for sig in gone:
                        account.sigs.pop(sig, None)
                    account.verified, account.newest, account.newest_slot = -1, None, -1
            raise RpcError(
                f"{len(gone)} signature(s) in finalized slots are unknown, e.g. {min(gone)}"
            )
        if pending:
            raise RpcError(f"{len(pending)} signature(s) in finalized slots are not finalized yet")

    def _prune(self) -> None:
        floor = self._finalized - self._retain
        if floor <= 0 or floor - self._pruned_at < self._retain // 4:
            return
        self._pruned_at = floor
        for account in self._accounts.values():
            if account.complete_from < floor:
                account.sigs = {s: v for s, v in account.sigs.items() if v[0] >= floor}
                account.complete_from = floor

    # -- blocks ----------------------------------------------------------------------------

    async def _list(self, start: int, end: int) -> list[int]:
        """Slots of ``[start, end]`` that have a block (raises if the endpoint lacks ``end``)."""
        if not self._listing.covers(start, end):
            slots = await self._one("getBlocks", [start, end, _CONFIRMED], min_head=end)
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
                **_CONFIRMED,
            }
            answers = await self._spread(
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
                    block_time(int(stamp)) if _plausible(stamp) else None,
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
            answers = await self._spread(
                [("getBlockTime", [slot]) for slot in missing],
                method="getBlockTime",
                min_head=min_head,
            )
            for slot, (stamp, _) in zip(missing, answers, strict=True):
                self._clock[slot] = block_time(int(stamp)) if _plausible(stamp) else None
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
            slots = await self._one("getBlocks", [lo, slot, _CONFIRMED], min_head=min_head)
            if slots:
                return int(slots[-1])
            if lo == 0:
                return None
        raise RpcError(f"no block in the {LOOKBACK[-1]} slots up to {slot}")

    async def _hash_at(self, slot: int | None, min_head: int) -> str:
        if slot is None:
            return ""
        return (await self._headers_of([slot], min_head))[slot][0]


SOLANA_GENESIS = 1_584_368_940
"""Mainnet-beta's genesis (2020-03-16, unix seconds): no real block time is older."""


def _plausible(stamp: object) -> bool:
    return isinstance(stamp, int) and stamp >= SOLANA_GENESIS


def _merge(poll: _Poll, low: int) -> None:
    """Record a finished poll: its signatures, and the slots its account is now known over.

    Only signatures at or below the poll's reference slot are kept: the list may hold some of
    a newer slot that was not complete yet, and ``until`` must only ever name a signature
    below which nothing can still appear. The newer ones come again in the next poll.
    """
    a = poll.account
    reference = poll.reference if poll.reference is not None else -1
    kept = [(sig, slot, ok) for sig, slot, ok in poll.found if slot <= reference]
    for sig, slot, ok in kept:
        a.sigs[sig] = (slot, ok)
    if kept:
        sig, slot, _ = kept[0]  # newest first
        if slot >= a.newest_slot:
            a.newest, a.newest_slot = sig, slot
    if poll.incremental:
        a.verified = max(a.verified, reference)
    else:
        contiguous = a.verified >= 0 and a.complete_from <= reference + 1
        a.verified = max(a.verified, reference) if contiguous else reference
        a.complete_from = low


def _amount(value: Mapping[str, Any]) -> int:
    data = value.get("data")
    raw = base64.b64decode(data[0]) if isinstance(data, list) and data else b""
    if len(raw) != AMOUNT_SLICE["length"]:
        raise RpcError(f"a token account's amount is {len(raw)} bytes")
    return int.from_bytes(raw, "little")
