"""TRC-20 payments on the local TRON node, seen by the real watcher, published to a real broker.

Pinned down: a transfer to a watched address is published ``detected`` in its block and
``confirmed`` once 19 blocks are on top (or once its block is solidified, when configured),
exactly once, with the exact integer amount, the base58 addresses the api stores, the txID and
the log's position in its block; failed receipts, other tokens, approvals, TRX and payments to
unwatched addresses are never published.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pago.common.enums import Token, TransferStage
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import WatcherApp, create_app
from tests.support.tron_node import TronChain, Tx, b58, key_of
from tests.support.watcher import (
    by_stage,
    dump,
    eventually,
    identity,
    read_cursors,
    read_transfers,
    running,
)
from tests.support.watcher_tron import (
    CONFIRMATIONS,
    USDT,
    USDT_CONTRACT,
    USDT_KEY,
    new_addresses,
    tron_settings,
    watch,
)


def _log_index(chain: TronChain, tx: Tx, nth: int = 0) -> int:
    """Where the ``nth`` Transfer log of ``tx`` sits among all logs of its block (the node's
    own record, independent of the watcher's counting)."""
    found = chain.locate(tx.txid)
    assert found is not None
    block, _ = found
    before = 0
    for other in block.txs:
        if other.txid == tx.txid:
            return before + nth
        before += len(other.logs)
    raise AssertionError("not in its block")


async def _scanned_to(app: WatcherApp, head: int, cursor: int) -> None:
    """Wait until the watcher has seen ``head`` and published everything up to ``cursor``."""

    def there() -> bool:
        s = app.scanner
        return (
            s is not None
            and s.head is not None
            and s.head.latest >= head
            and s.cursor is not None
            and s.cursor.number >= cursor
        )

    await eventually(there, what=f"head {head} and cursor {cursor}")


class TestPayments:
    async def test_detected_in_the_block_confirmed_19_blocks_later(
        self,
        chain: TronChain,
        broker: KafkaServer,
        redis_server: RedisServer,
        chains: Path,
    ) -> None:
        kafka = broker.bootstrap_servers
        watched = new_addresses(4)
        (stranger,) = new_addresses(1)
        await watch(kafka, watched)
        a, b, c, d = (key_of(x) for x in watched)
        first = chain.head.number + 1
        # Paid before the watcher starts: found by the catch-up over blocks behind the head.
        early = chain.trc20_transfer(USDT_KEY, a, 10 * USDT + 1)
        chain.mine(3)

        settings = tron_settings(kafka, redis_server.url, chains, start_block=first)
        async with running(create_app(settings)) as app:
            pay = chain.trc20_transfer(USDT_KEY, b, 4 * USDT)
            routed = chain.router_payment(USDT_KEY, c, 7 * USDT)  # the 2nd log of its call
            once = chain.trc20_transfer(USDT_KEY, d, 1)
            twice = chain.trc20_transfer(USDT_KEY, d, 2)  # two payments, one block, one address
            never = [
                chain.trc20_transfer(USDT_KEY, b, 99 * USDT, result="REVERT"),
                chain.trc20_transfer(USDT_KEY, b, 98 * USDT, result="OUT_OF_ENERGY"),
                # A failed receipt that still lists its Transfer log (the docs warn of it).
                chain.trc20_transfer(
                    USDT_KEY, b, 94 * USDT, result="REVERT", logs_despite_failure=True
                ),
                chain.trc20_transfer(chain.other_token, b, 97 * USDT),  # not a registry token
                chain.approve(USDT_KEY, b, 96 * USDT),  # an Approval naming b in topic 2
                chain.trx_transfer(b, 95 * 10**6),  # TRX, no token at all
                chain.trc20_transfer(USDT_KEY, key_of(stranger), 5 * USDT),  # not watched
            ]
            (block,) = chain.mine(1)
            live = {pay.txid, routed.txid, once.txid, twice.txid}

            seen = await read_transfers(kafka, lambda f: live <= {t.tx_hash for t in f})
            assert {t.stage for t in seen if t.tx_hash in live} == {TransferStage.DETECTED}
            assert {t.confirmations for t in seen if t.tx_hash in live} == {0}

            # One block short of the depth: the cursor stops right below the payments' block.
            chain.mine(CONFIRMATIONS - 1)
            await _scanned_to(app, block.number + CONFIRMATIONS - 1, block.number - 1)
            so_far = await read_transfers(kafka, lambda f: True, timeout=1)
            assert not [t for t in by_stage(so_far)["confirmed"] if t.tx_hash in live]

            chain.mine(1)
            expected = {early.txid} | live
            seen = await read_transfers(
                kafka, lambda f: expected <= {t.tx_hash for t in by_stage(f)["confirmed"]}
            )

        stages = by_stage(seen)
        confirmed = stages["confirmed"]
        assert stages["reverted"] == []
        assert {t.tx_hash for t in seen} == expected, "nothing else is ever published"
        assert not {tx.txid for tx in never} & {t.tx_hash for t in seen}
        assert Counter(identity(t) for t in confirmed).most_common(1)[0][1] == 1, dump(seen)
        by_tx: dict[str, list[object]] = {}
        for t in confirmed:
            by_tx.setdefault(t.tx_hash, []).append(t)
            assert type(t.amount_raw) is int
            assert (t.token, t.contract, t.decimals) == (Token.USDT, USDT_CONTRACT, 6)
            assert t.confirmations >= CONFIRMATIONS
            found = chain.locate(t.tx_hash)
            assert found is not None
            assert (t.block_number, t.block_hash) == (found[0].number, found[0].id)
        facts = {
            early.txid: (watched[0], 10 * USDT + 1, b58(early.owner), _log_index(chain, early)),
            pay.txid: (watched[1], 4 * USDT, b58(pay.owner), _log_index(chain, pay)),
            routed.txid: (watched[2], 7 * USDT, b58(chain.router), _log_index(chain, routed, 1)),
            once.txid: (watched[3], 1, b58(once.owner), _log_index(chain, once)),
            twice.txid: (watched[3], 2, b58(twice.owner), _log_index(chain, twice)),
        }
        for t in confirmed:
            assert (t.to_address, t.amount_raw, t.from_address, t.log_index) == facts[t.tx_hash]
        # Detected only while shallower than the depth, and before its confirmation.
        order = {(identity(t), t.stage): i for i, t in enumerate(seen)}
        for t in stages["detected"]:
            assert t.confirmations < CONFIRMATIONS
            assert (
                order[(identity(t), TransferStage.DETECTED)]
                < order[(identity(t), TransferStage.CONFIRMED)]
            )
        last, _ = (await read_cursors(kafka))[-1]
        assert last.block_number >= block.number
        assert last.block_hash == chain.blocks[last.block_number].id

    @pytest.mark.parametrize("solidified_from", ["nodeinfo", "walletsolidity"])
    async def test_confirmed_once_its_block_is_solidified(
        self,
        chain: TronChain,
        broker: KafkaServer,
        redis_server: RedisServer,
        chains: Path,
        solidified_from: str,
    ) -> None:
        """With ``PAGO_WATCHER_CONFIRM_AT=finalized`` the solidified block decides, not the
        depth: 5 blocks behind the head on this chain, so well before 19 confirmations."""
        chain.solid_lag = 5
        kafka = broker.bootstrap_servers
        (address,) = new_addresses(1)
        await watch(kafka, [address])
        settings = tron_settings(
            kafka,
            redis_server.url,
            chains,
            start_block=chain.head.number + 1,
            confirm_at="finalized",
            tron_solidified_from=solidified_from,
        )
        async with running(create_app(settings)) as app:
            tx = chain.trc20_transfer(USDT_KEY, key_of(address), 3 * USDT)
            (block,) = chain.mine(1)
            chain.mine(4)  # solidified: the block before the payment's
            await _scanned_to(app, block.number + 4, block.number - 1)
            scanner = app.scanner
            assert scanner is not None
            assert scanner.head is not None
            assert scanner.head.finalized == block.number - 1
            so_far = await read_transfers(kafka, lambda f: any(t.tx_hash == tx.txid for t in f))
            assert [t.stage for t in so_far] == [TransferStage.DETECTED]
            chain.mine(1)
            seen = await read_transfers(
                kafka, lambda f: any(t.stage is TransferStage.CONFIRMED for t in f)
            )
        (confirmed,) = by_stage(seen)["confirmed"]
        assert (confirmed.tx_hash, confirmed.amount_raw) == (tx.txid, 3 * USDT)
        assert confirmed.confirmations == 5 < CONFIRMATIONS
