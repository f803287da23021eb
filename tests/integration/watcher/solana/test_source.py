"""``SolanaSource`` on its own against Surfpool: what a range costs, and what balance hints can
and cannot see. These pin the design (``docs/solana-watcher.md``) with counted calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pago.common.enums import Mode, Network, Token
from pago.common.networks import TokenSpec
from pago.devstack.surfpool import Surfpool
from pago.watcher.chains.solana import CallBudget, SolanaSource
from tests.support.watcher_solana import (
    TOKEN,
    owners,
    pay,
    send,
    transfer_ix,
    wait_confirmed,
)


def _source(surfpool: Surfpool, **options: object) -> SolanaSource:
    tokens = {Token(s): TokenSpec(Token(s), mint, 6) for s, mint in surfpool.mints.items()}
    return SolanaSource.connect(
        Network.SOLANA,
        Mode.TEST,
        tokens,
        [surfpool.rpc_url],
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def source(surfpool: Surfpool) -> AsyncIterator[SolanaSource]:
    src = _source(surfpool)
    try:
        yield src
    finally:
        await src.aclose()


async def _finalized_past(src: SolanaSource, slot: int) -> int:
    for _ in range(200):
        head = await src.head(finalized=True)
        assert head.finalized is not None
        if head.finalized >= slot:
            return head.finalized
        await asyncio.sleep(0.1)
    raise AssertionError(f"slot {slot} never finalized")


class TestBalanceHints:
    async def test_a_deposit_swept_out_between_two_reads_is_missed_by_hints_only(
        self, surfpool: Surfpool, source: SolanaSource
    ) -> None:
        """Above the finalized slot a range is answered from balances: a deposit that left
        again before the next read looks like nothing happened. The same slots, once final,
        come from the signature sweep, which has it."""
        (owner,) = owners(1)
        payer = surfpool.payer
        assert payer is not None
        key = frozenset({bytes(owner.pubkey())})
        await pay(surfpool, "USDT", owner, 1)
        first = await source.head(finalized=True)
        assert first.finalized is not None
        assert first.finalized < first.latest
        await source.transfers(first.finalized + 1, first.latest, key)  # balances read
        # The first read saw the ATA's balance in a slot that may still fill: its signatures
        # are owed up to there, and the next pass settles that.
        ata = surfpool.associated_token_address("USDT", owner.pubkey())
        (account,) = [a for a in source.accounts_of(bytes(owner.pubkey())) if a.address == ata]
        while account.verified < account.amount_at:
            await asyncio.sleep(0.2)
            later = await source.head(finalized=True)
            await source.transfers(first.latest + 1, later.latest, key)
            first = later

        deposit = await pay(surfpool, "USDT", owner, 9 * TOKEN)
        sweep = await send(
            surfpool,
            [transfer_ix(surfpool, "USDT", owner.pubkey(), payer.pubkey(), 9 * TOKEN)],
            owner,
        )
        slot = await asyncio.to_thread(wait_confirmed, surfpool, deposit)
        sweep_slot = await asyncio.to_thread(wait_confirmed, surfpool, sweep)
        now = await source.head(finalized=True)
        while now.latest < sweep_slot:  # the range must hold both transactions
            await asyncio.sleep(0.05)
            now = await source.head(finalized=True)
        assert now.finalized is not None
        assert now.finalized < slot, "still above finalized"
        hinted = await source.transfers(first.latest + 1, now.latest, key)
        assert deposit not in {t.tx_hash for t in hinted.transfers}, "the balance is unchanged"

        final = await _finalized_past(source, now.latest)
        swept = await source.transfers(first.latest + 1, final, key)
        (found,) = [t for t in swept.transfers if t.tx_hash == deposit]
        assert (found.amount_raw, found.block_number) == (9 * TOKEN, slot)

    async def test_what_a_range_costs_with_and_without_hints(self, surfpool: Surfpool) -> None:
        """200 owners (400 ATAs), two of them paid already: a signature sweep asks each ATA
        once; balance hints ask 100 ATAs a call and poll only the ATAs that exist but were
        never swept (paid before the first read); a range already covered costs nothing."""
        paid = owners(2)
        for owner in paid:
            await pay(surfpool, "USDT", owner, 5)
        watched = frozenset(bytes(o.pubkey()) for o in [*paid, *owners(198)])
        for hints in (False, True):
            src = _source(surfpool, balance_hints=hints)
            try:
                head = await src.head(finalized=True)
                before = src.stats.calls.copy()
                await src.transfers(head.latest - 2, head.latest, watched)
                spent = src.stats.calls - before
                again = await src.head(finalized=True)
                before = src.stats.calls.copy()
                await src.transfers(head.latest - 2, head.latest, watched)
                repeat = src.stats.calls - before
            finally:
                await src.aclose()
            if hints:
                assert spent["getMultipleAccounts"] == 4 + 1  # + the mints' token programs
                assert spent["getSignaturesForAddress"] == 2, "the two paid USDT ATAs"
            else:
                assert spent["getSignaturesForAddress"] == 400
                assert spent["getMultipleAccounts"] == 1  # the mints' token programs
            assert repeat["getSignaturesForAddress"] == 0, "covered ranges are free"
            assert repeat["getMultipleAccounts"] == 0
            assert again.latest >= head.latest

        src = _source(surfpool, balance_hints=True)
        try:
            head = await src.head(finalized=True)
            await src.transfers(head.latest - 2, head.latest, watched)
            # The paid ATAs owe a poll up to the slot their balance was seen at: settled next.
            await asyncio.sleep(0.3)  # new slots: the next detection range
            settle = await src.head(finalized=True)
            await src.transfers(head.latest + 1, settle.latest, watched)
            await asyncio.sleep(0.3)
            later = await src.head(finalized=True)
            before = src.stats.calls.copy()
            await src.transfers(settle.latest + 1, later.latest, watched)
            steady = src.stats.calls - before
        finally:
            await src.aclose()
        assert later.latest > settle.latest
        assert steady["getMultipleAccounts"] == 4, "400 idle ATAs: 4 balance reads"
        assert steady["getSignaturesForAddress"] == 0, "no balance moved: no signature poll"


class TestBudget:
    async def test_the_call_budget_paces_a_sweep(self, surfpool: Surfpool) -> None:
        """600 calls at 400 calls/s with a burst of 100: about 1.25 s, never faster."""
        watched = frozenset(bytes(o.pubkey()) for o in owners(300))
        src = _source(surfpool, budget=400, balance_hints=False)
        src.budget = CallBudget(400, burst=100)
        try:
            head = await src.head(finalized=True)
            calls = src.stats.total_calls
            began = time.monotonic()
            await src.transfers(head.latest - 1, head.latest, watched)
            seconds = time.monotonic() - began
            spent = src.stats.total_calls - calls
        finally:
            await src.aclose()
        assert spent >= 600
        assert seconds >= (spent - 100) / 400 * 0.95
        assert src.budget.waited > 0

    async def test_an_unlimited_budget_never_waits(self) -> None:
        budget = CallBudget(0)
        assert await budget.take(10**6) == 0.0

    async def test_takers_are_served_in_order(self) -> None:
        clock = [0.0]
        budget = CallBudget(1000, burst=10, clock=lambda: clock[0])
        assert await budget.take(10) == 0.0
        waits: list[float] = []

        async def take(n: int) -> None:
            waits.append(await budget.take(n))

        await asyncio.gather(take(5), take(5))
        assert waits == [0.005, 0.01], "the second waits for the first one's reservation too"
