"""Real ERC-20 transfers on anvil, seen by a real watcher, published to a real broker.

What is pinned down: every transfer to a watched address is published as ``detected`` near the
head and ``confirmed`` at head − confirmations, exactly once each, with exact integer amounts,
keyed ``{network}:{address}`` with the address EIP-55 spelled; nothing is published for
unwatched addresses; the cursor ends past the last transfer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pago.common.enums import Token, TransferStage
from pago.common.topics import CHAIN_CURSORS, CHAIN_TRANSFERS
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from tests.support.watcher import (
    NETWORK,
    USDT,
    Payment,
    assert_cursor_never_ahead,
    by_stage,
    caught_up_to,
    dump,
    event_type,
    eventually,
    identity,
    new_addresses,
    pay_in_one_block,
    read_all,
    read_cursors,
    read_transfers,
    running,
    transfers_of,
    unwatch,
    watch,
    watcher_settings,
)


class TestScan:
    async def test_transfers_to_100_session_addresses(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        sessions = new_addresses(anvil, 100)
        strangers = new_addresses(anvil, 12)
        # The api stores EIP-55; a lowercase entry must still match and come out EIP-55.
        await watch(kafka, [*sessions[1:], sessions[0].lower()])
        first_block = anvil.web3.eth.block_number + 1

        # Paid before the watcher starts: the catch-up path (ranges behind the head).
        early = [
            Payment("USDT" if i % 2 else "USDC", 1 + i % 5, address, 10 * USDT + i)
            for i, address in enumerate(sessions[:40])
        ]
        expected: dict[str, Payment] = {}
        for chunk in (early[:20], early[20:]):
            noise = [Payment("USDT", 6, s, 3 * USDT) for s in strangers[:4]]
            hashes = pay_in_one_block(anvil, [*chunk, *noise])
            expected.update(zip(hashes[: len(chunk)], chunk, strict=True))

        settings = watcher_settings(kafka, redis_server.url, chains, start_block=first_block)
        async with running(create_app(settings)):
            live: list[Payment] = [
                Payment("USDT", 2, sessions[40], 4 * USDT),  # partial…
                Payment("USDT", 3, sessions[41], 15 * USDT + 1),  # overpayment of 10
            ]
            live += [Payment("USDC", 1 + i % 4, a, 10 * USDT) for i, a in enumerate(sessions[42:])]
            for start in range(0, len(live), 15):
                chunk = live[start : start + 15]
                noise = [Payment("USDC", 7, s, 1) for s in strangers[4:]]
                hashes = await asyncio.to_thread(pay_in_one_block, anvil, [*chunk, *noise])
                expected.update(zip(hashes[: len(chunk)], chunk, strict=True))
            top_up = Payment("USDT", 2, sessions[40], 6 * USDT)  # …then the top-up
            (tx,) = await asyncio.to_thread(pay_in_one_block, anvil, [top_up])
            expected[tx] = top_up
            # In the head block, so detected (and not confirmed) until two more blocks come.
            so_far = await read_transfers(kafka, lambda f: any(t.tx_hash == tx for t in f))
            (detected,) = [t for t in so_far if t.tx_hash == tx]
            assert (detected.stage, detected.confirmations) == (TransferStage.DETECTED, 0)
            await asyncio.to_thread(anvil.mine, 3)

            def complete(found: list[object]) -> bool:
                confirmed = {t.tx_hash for t in by_stage(found)["confirmed"]}  # type: ignore[arg-type]
                return confirmed >= expected.keys()

            seen = await read_transfers(kafka, complete)  # type: ignore[arg-type]

        stages = by_stage(seen)
        assert stages["reverted"] == []
        assert Counter(identity(t) for t in stages["confirmed"]).most_common(1)[0][1] == 1
        assert {t.tx_hash for t in seen} == expected.keys(), "strangers are never reported"
        tokens = {s: anvil.tokens[s] for s in ("USDT", "USDC")}
        for t in stages["confirmed"]:
            paid = expected[t.tx_hash]
            assert t.to_address == paid.to, "EIP-55, as the api stores pay_address"
            assert type(t.amount_raw) is int
            assert t.amount_raw == paid.units
            assert (t.token, t.contract, t.decimals) == (Token(paid.symbol), tokens[paid.symbol], 6)
            assert t.from_address == anvil.payers[paid.payer][0]
            assert t.confirmations >= 2
            assert t.block_number >= first_block
            stamp = anvil.web3.eth.get_block(t.block_number)["timestamp"]
            assert t.block_time == datetime.fromtimestamp(stamp, UTC), "the block's own time"
        to_40 = sorted(
            (t.block_number, t.amount_raw)
            for t in stages["confirmed"]
            if t.to_address == sessions[40]
        )
        assert [amount for _, amount in to_40] == [4 * USDT, 6 * USDT], dump(seen)
        # Detected only while shallower than the confirmations, and never after confirmed.
        # (A transfer buried before the head was next polled goes straight to confirmed.)
        order = {(identity(t), t.stage): i for i, t in enumerate(seen)}
        for t in stages["detected"]:
            assert t.confirmations < 2
            assert (
                order[(identity(t), TransferStage.DETECTED)]
                < order[(identity(t), TransferStage.CONFIRMED)]
            )

        everything = await read_all(kafka, CHAIN_TRANSFERS)
        for r in everything:
            assert dict(r.headers)["v"] == b"1"
            assert event_type(r) in ("TransferObserved", "ChainScanned")
        records = [r for r in everything if event_type(r) == "TransferObserved"]
        assert len(records) == len(seen)
        assert_cursor_never_ahead(records, await read_all(kafka, CHAIN_CURSORS))
        assert {r.key for r in records} == {f"{NETWORK}:{t.to_address}".encode() for t in seen}, (
            "keyed network:address, so one address stays on one partition"
        )
        cursors = await read_cursors(kafka)
        assert cursors[0][0].block_number == first_block - 1, "first start writes where it began"
        last, fence = cursors[-1]
        assert last.block_number >= max(t.block_number for t in seen)
        assert fence >= 1
        numbers = [c.block_number for c, _ in cursors]
        assert numbers == sorted(numbers), "the cursor only moves forward"

    async def test_an_address_watched_after_its_payment_is_still_reported(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """The api's outbox may publish a WatchAddress after the payer already paid and the
        scan passed that block: the late address is looked up over the scanned blocks."""
        kafka = broker.bootstrap_servers
        early, late = new_addresses(anvil, 2)
        await watch(kafka, [early])
        settings = watcher_settings(
            kafka, redis_server.url, chains, start_block=anvil.web3.eth.block_number + 1
        )
        async with running(create_app(settings)) as app:
            (tx,) = await asyncio.to_thread(pay_in_one_block, anvil, [Payment("USDT", 1, late, 7)])
            await asyncio.to_thread(anvil.mine, 4)
            receipt = anvil.web3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
            scanner = app.scanner
            assert scanner is not None
            await eventually(
                lambda: (
                    scanner.cursor is not None and scanner.cursor.number > receipt["blockNumber"]
                )
            )
            await watch(kafka, [late])
            seen = await read_transfers(kafka, lambda f: any(t.tx_hash == tx for t in f))
        (found,) = seen
        assert (found.stage, found.amount_raw, found.to_address) == (
            TransferStage.CONFIRMED,
            7,
            late,
        )

    async def test_a_first_start_looks_up_watched_addresses_below_its_first_block(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """A first start begins at head − confirmations; a session created before it and paid
        deeper than that is still reported (its address is looked up over the blocks below)."""
        kafka = broker.bootstrap_servers
        (early,) = new_addresses(anvil, 1)
        await watch(kafka, [early])
        (tx,) = await asyncio.to_thread(pay_in_one_block, anvil, [Payment("USDT", 1, early, 3)])
        await asyncio.to_thread(anvil.mine, 5)
        settings = watcher_settings(kafka, redis_server.url, chains)  # no start block
        async with running(create_app(settings)) as app:
            seen = await read_transfers(kafka, lambda f: any(t.tx_hash == tx for t in f))
            scanner = app.scanner
            assert scanner is not None
            await eventually(lambda: not scanner.status()["late_addresses"])
        (found,) = seen
        assert found.stage is TransferStage.CONFIRMED
        first_block = (await read_cursors(kafka))[0][0].block_number + 1
        assert found.block_number < first_block, "below where the scan itself began"

    async def test_a_tombstone_stops_watching(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        kept, dropped = new_addresses(anvil, 2)
        await watch(kafka, [kept, dropped])
        settings = watcher_settings(
            kafka, redis_server.url, chains, start_block=anvil.web3.eth.block_number + 1
        )
        async with running(create_app(settings)) as app:
            await unwatch(kafka, dropped)
            await eventually(lambda: len(app.follower.watch_set) == 1)
            payments = [Payment("USDT", 1, dropped, 5), Payment("USDT", 1, kept, 6)]
            _, tx_kept = await asyncio.to_thread(pay_in_one_block, anvil, payments)
            await asyncio.to_thread(anvil.mine, 3)
            seen = await read_transfers(
                kafka, lambda f: any(t.stage is TransferStage.CONFIRMED for t in f)
            )
        assert {t.tx_hash for t in seen} == {tx_kept}

    @pytest.mark.parametrize("confirm_at", ["finalized"])
    async def test_confirmed_at_the_finalized_tag(
        self,
        anvil: Anvil,
        broker: KafkaServer,
        redis_server: RedisServer,
        chains: Path,
        confirm_at: str,
    ) -> None:
        """anvil's ``finalized`` block is latest − 64: nothing confirms before that depth."""
        kafka = broker.bootstrap_servers
        (address,) = new_addresses(anvil, 1)
        await watch(kafka, [address])
        settings = watcher_settings(
            kafka,
            redis_server.url,
            chains,
            start_block=anvil.web3.eth.block_number + 1,
            confirm_at=confirm_at,
        )
        async with running(create_app(settings)) as app:
            (tx,) = await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDC", 2, address, 9)]
            )
            await asyncio.to_thread(anvil.mine, 10)
            (detected,) = await read_transfers(kafka, lambda f: len(f) >= 1)
            assert detected.stage is TransferStage.DETECTED
            # The scanner has seen the head and published every confirmation that head allows.
            head = anvil.web3.eth.block_number
            await eventually(lambda: caught_up_to(app, head), what="the scan to catch up")
            assert len(transfers_of(await read_all(kafka, CHAIN_TRANSFERS))) == 1, "not final"
            await asyncio.to_thread(anvil.mine, 60)
            seen = await read_transfers(kafka, lambda f: len(f) >= 2)
        assert [t.stage for t in seen] == [TransferStage.DETECTED, TransferStage.CONFIRMED]
        assert seen[1].tx_hash == tx
        assert seen[1].confirmations >= 64
