"""The followed token accounts of the SOLANA source and what is known of their signatures.

An owner's followed accounts are its associated token accounts (ATAs), one per registry mint,
derived from owner + the mint's token program (read from the mint once) + mint. What they hold
is learnt from signature sweeps (``getSignaturesForAddress``, paged newest first), from balance
hints (``getMultipleAccounts``: only the ATAs whose balance moved are polled), and is checked to
be final (``getSignatureStatuses``) before a finalized range is answered; the package docstring
(``chains/solana/__init__.py``) says how a range uses each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from pago.watcher.chains.solana.decode import AMOUNT_SLICE, token_amount
from pago.watcher.chains.solana.rpc import BULK, CONFIRMED, INDEX_MARGIN, URGENT, Call, SolanaRpc
from pago.watcher.core.rpc import RpcError
from pago.watcher.core.source import WatchView
from pago.watcher.core.watch_set import WatchSet

SIGNATURE_PAGE = 1000
"""``getSignaturesForAddress`` returns at most this many signatures a call."""
ACCOUNTS_PER_CALL = 100
"""``getMultipleAccounts`` takes at most this many accounts a call."""
STATUSES_PER_CALL = 256
"""``getSignatureStatuses`` takes at most this many signatures a call."""
FINAL_CACHE = 200_000
RETAIN_SLOTS = 20_000
"""Signatures older than this many slots below the finalized slot are forgotten (~2.2 h on
mainnet): far more than a backfill looks back; an older range is swept again."""
TOKEN_PROGRAMS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)


@lru_cache(maxsize=1 << 16)
def base58_pubkey(key: bytes) -> str:
    """The base58 spelling of a 32-byte pubkey (what the api stores as ``pay_address``)."""
    return str(Pubkey.from_bytes(key))


def associated_token_account(owner: bytes, mint: Pubkey, program: Pubkey) -> str:
    return str(get_associated_token_address(Pubkey.from_bytes(owner), mint, program))


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
        params: dict[str, Any] = {"limit": page, **CONFIRMED}
        if self.until is not None:
            params["until"] = self.until
        if self.before is not None:
            params["before"] = self.before
        return params


class AccountBook:
    """The followed ATAs of every watched owner (one per registry mint, in ``mints`` order),
    their signatures, and the signatures known to be finalized."""

    def __init__(
        self,
        rpc: SolanaRpc,
        mints: Sequence[str],
        *,
        signature_page: int = SIGNATURE_PAGE,
        retain_slots: int = RETAIN_SLOTS,
    ) -> None:
        self._rpc = rpc
        self._mints = list(mints)
        self._mint_keys = [Pubkey.from_string(m) for m in self._mints]
        self._programs: list[Pubkey] | None = None
        self._page = signature_page
        self._retain = retain_slots
        self._owners: dict[bytes, tuple[Account, ...]] = {}
        self._accounts: dict[str, Account] = {}
        self._final: set[str] = set()
        self._pruned_at = -1
        self._verify_lock = asyncio.Lock()

    def get(self, address: str) -> Account | None:
        """The followed account at ``address``, if it is one."""
        return self._accounts.get(address)

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

    async def load_programs(self) -> list[Pubkey]:
        """Each mint's token program (SPL Token or Token-2022), read once from the mints."""
        if self._programs is not None:
            return self._programs
        answer = await self._rpc.one(
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

    def of_watched(self, watched: WatchView) -> list[Account]:
        """The followed accounts of every owner in ``watched``."""
        accounts: list[Account] = []
        for owner in watched:
            accounts.extend(self.accounts_of(owner))
        if isinstance(watched, WatchSet) and len(self._owners) > 2 * len(watched) + 1024:
            # Owners the watch set evicted (expired sessions): forget their accounts.
            self._owners = {o: a for o, a in self._owners.items() if o in watched}
            self._accounts = {a.address: a for accs in self._owners.values() for a in accs}
        return accounts

    async def verify(self, accounts: Sequence[Account], low: int, high: int) -> None:
        """Make every account's signature list complete over ``[low, high]``.

        One sweep at a time: the confirm loop fetches several ranges at once, and the first
        sweep (to the endpoint's head) usually covers the others.
        """
        async with self._verify_lock:
            stale = [a for a in accounts if not a.covers(low, high)]
            if stale:
                await self._poll(stale, low, high, priority=BULK)

    async def hint(self, accounts: Sequence[Account], low: int, high: int) -> None:
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
        options = {"encoding": "base64", "dataSlice": AMOUNT_SLICE, **CONFIRMED}
        answers = await self._rpc.spread(
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
                amount = None if value is None else token_amount(value)
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
            answers = await self._rpc.spread(
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

    async def check_final(self, sigs: Sequence[str], accounts: Sequence[Account], end: int) -> None:
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
        answers = await self._rpc.spread(calls, method="getSignatureStatuses", min_head=end)
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

    def prune(self, finalized: int) -> None:
        """Forget signatures more than ``retain_slots`` below the ``finalized`` slot."""
        floor = finalized - self._retain
        if floor <= 0 or floor - self._pruned_at < self._retain // 4:
            return
        self._pruned_at = floor
        for account in self._accounts.values():
            if account.complete_from < floor:
                account.sigs = {s: v for s, v in account.sigs.items() if v[0] >= floor}
                account.complete_from = floor


def signatures_in(accounts: Sequence[Account], start: int, end: int) -> dict[str, int]:
    """The successful signatures of ``accounts`` in slots ``[start, end]``: signature → slot."""
    found: dict[str, int] = {}
    for account in accounts:
        for sig, (slot, ok) in account.sigs.items():
            if ok and start <= slot <= end:
                found[sig] = slot
    return found


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
