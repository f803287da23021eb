"""Real SPL token deposits on Surfpool, seen by a real SOLANA watcher, published to a real broker.

What is pinned down: a deposit to a watched owner's ATA (``transfer_checked``, the ATA created
in the same transaction when it is new) is published ``detected`` and then ``confirmed`` once
its slot is finalized, exactly once each, with the exact integer amount, the payer as sender
and the owner (not the ATA) as ``to_address``; deposits to other owners never are; a deposit
swept out again at once, an owner watched only after it was paid, and histories longer than a
signature page are all still confirmed; a dead RPC URL is failed over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pago.common.enums import Token, TransferStage
from pago.common.events import TransferObserved
from pago.common.topics import CHAIN_TRANSFERS
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.devstack.surfpool import Surfpool
from pago.watcher.app import create_app
from pago.watcher.chains.solana import SolanaSource
from tests.support.watcher import (
    by_stage,
    event_type,
    eventually,
    identity,
    read_all,
    read_cursors,
    read_transfers,
    running,
)
from tests.support.watcher_solana import (
    NETWORK,
    TOKEN,
    chains_file,
    create_ata_ix,
    finalized_slot,
    owners,
    pay,
    pay_fast,
    rpc,
    send,
    solana_settings,
    transfer_ix,
    watch,
)


def _confirmed(ids: set[str]) -> Callable[[list[TransferObserved]], bool]:
    def done(found: list[TransferObserved]) -> bool:
        return {t.tx_hash for t in by_stage(found)["confirmed"]} >= ids

    return done


def _ata_index(surfpool: Surfpool, signature: str, ata: str) -> int:
    tx = rpc(
        surfpool,
        "getTransaction",
        [signature, {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}],
    )
    keys = [k["pubkey"] for k in tx["transaction"]["message"]["accountKeys"]]
    return keys.index(ata)


class TestDeposits:
    async def test_watched_deposits_are_detected_then_confirmed_and_others_ignored(
        self, surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        kafka = broker.bootstrap_servers
        session, strangers = owners(5), owners(2)
        await watch(kafka, [str(o.pubkey()) for o in session])
        # Paid before the watcher starts (above the finalized slot it starts from): catch-up.
        expected = {await pay(surfpool, "USDT", session[0], 4 * TOKEN): (session[0], "USDT", 4)}
        await pay(surfpool, "USDT", strangers[0], 3 * TOKEN)

        settings = solana_settings(kafka, redis_server.url, chains)
        async with running(create_app(settings)):
            live = [
                (session[0], "USDT", 6),  # the second payment: the ATA exists already
                (session[1], "USDC", 10),
                (session[2], "USDT", 15),
                (session[3], "USDC", 1),
                (session[4], "USDT", 7),
            ]
            for owner, symbol, whole in live:
                sig = await pay(surfpool, symbol, owner, whole * TOKEN + 1)
                expected[sig] = (owner, symbol, whole)
                await pay(surfpool, symbol, strangers[1], 2 * TOKEN)
            seen = await read_transfers(kafka, _confirmed(set(expected)), timeout=30)

        stages = by_stage(seen)
        assert stages["reverted"] == []
        assert {t.tx_hash for t in seen} == set(expected), "other owners are never reported"
        assert max(Counter(identity(t) for t in stages["confirmed"]).values()) == 1
        payer = str(surfpool.payer.pubkey()) if surfpool.payer else ""
        for t in stages["confirmed"]:
            owner, symbol, whole = expected[t.tx_hash]
            units = whole * TOKEN + (0 if whole == 4 else 1)
            assert type(t.amount_raw) is int
            assert (t.amount_raw, t.decimals) == (units, 6)
            assert t.to_address == str(owner.pubkey()), "the owner, as the api stores it"
            assert t.from_address == payer, "the owner whose balance fell"
            assert (t.token, t.contract) == (Token(symbol), surfpool.mints[symbol])
            ata = surfpool.associated_token_address(symbol, owner.pubkey())
            assert t.log_index == _ata_index(surfpool, t.tx_hash, ata)
            assert t.network.value == NETWORK
        # Confirmed means finalized: every confirmed signature is final on the node.
        statuses = rpc(
            surfpool,
            "getSignatureStatuses",
            [[t.tx_hash for t in stages["confirmed"]], {"searchTransactionHistory": True}],
        )
        assert {s["confirmationStatus"] for s in statuses["value"]} == {"finalized"}
        # Live deposits are detected first (Surfpool finalizes ~30 slots, ~2 s, behind).
        order = {(identity(t), t.stage): i for i, t in enumerate(seen)}
        for t in stages["detected"]:
            assert (
                order[(identity(t), TransferStage.DETECTED)]
                < order[(identity(t), TransferStage.CONFIRMED)]
            )
        assert len(stages["detected"]) >= len(live) - 1
        records = [
            r for r in await read_all(kafka, CHAIN_TRANSFERS) if event_type(r) != "ChainScanned"
        ]
        assert {r.key for r in records} == {f"{NETWORK}:{t.to_address}".encode() for t in seen}
        cursors = [c.block_number for c, _ in await read_cursors(kafka)]
        assert cursors == sorted(cursors), "the cursor only moves forward"
        assert cursors[-1] >= max(t.block_number for t in seen)

    async def test_a_payer_creating_the_ata_in_the_same_transaction(
        self, surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """A fresh owner has no ATA: the payer's transaction creates it and funds it. One
        transaction funding both of an owner's ATAs gives two transfers, told apart by
        ``log_index``."""
        kafka = broker.bootstrap_servers
        (owner,) = owners(1)
        ata = surfpool.associated_token_address("USDT", owner.pubkey())
        assert rpc(surfpool, "getAccountInfo", [ata])["value"] is None
        await watch(kafka, [str(owner.pubkey())])
        payer = surfpool.payer
        assert payer is not None
        async with running(create_app(solana_settings(kafka, redis_server.url, chains))):
            both = await send(
                surfpool,
                [
                    create_ata_ix(surfpool, "USDT", owner.pubkey()),
                    create_ata_ix(surfpool, "USDC", owner.pubkey()),
                    transfer_ix(surfpool, "USDT", payer.pubkey(), owner.pubkey(), 5 * TOKEN),
                    transfer_ix(surfpool, "USDC", payer.pubkey(), owner.pubkey(), 2 * TOKEN),
                    # Twice to one ATA in one transaction: one transfer of the net amount.
                    transfer_ix(surfpool, "USDC", payer.pubkey(), owner.pubkey(), 1),
                ],
            )
            seen = await read_transfers(kafka, _confirmed({both}), timeout=30)
        confirmed = sorted(by_stage(seen)["confirmed"], key=lambda t: t.token.value)
        assert [(t.token, t.amount_raw) for t in confirmed] == [
            (Token.USDC, 2 * TOKEN + 1),
            (Token.USDT, 5 * TOKEN),
        ]
        assert len({t.log_index for t in confirmed}) == 2
        assert {t.tx_hash for t in confirmed} == {both}
        tx = rpc(
            surfpool,
            "getTransaction",
            [both, {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}],
        )
        index = _ata_index(surfpool, both, ata)
        assert index not in {b["accountIndex"] for b in tx["meta"]["preTokenBalances"]}, (
            "the ATA did not exist before this transaction"
        )

    async def test_a_deposit_swept_out_at_once_is_still_confirmed(
        self, surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """The merchant's sweeper empties the ATA right after the deposit: its balance is back
        where it was, which balance hints cannot see; the signature sweep behind the
        confirmed stage does."""
        kafka = broker.bootstrap_servers
        (owner,) = owners(1)
        await watch(kafka, [str(owner.pubkey())])
        payer = surfpool.payer
        assert payer is not None
        await pay(surfpool, "USDT", owner, 1)  # the ATA exists and has a balance
        async with running(create_app(solana_settings(kafka, redis_server.url, chains))):
            (deposit,) = await pay_fast(surfpool, [("USDT", owner, 9 * TOKEN)])
            sweep = await send(
                surfpool,
                [transfer_ix(surfpool, "USDT", owner.pubkey(), payer.pubkey(), 9 * TOKEN)],
                owner,
            )
            seen = await read_transfers(kafka, _confirmed({deposit}), timeout=30)
        confirmed = [t for t in by_stage(seen)["confirmed"] if t.tx_hash == deposit]
        assert [(t.amount_raw, t.from_address) for t in confirmed] == [
            (9 * TOKEN, str(payer.pubkey()))
        ]
        assert sweep not in {t.tx_hash for t in seen}, "a debit is not a deposit"

    async def test_an_owner_watched_after_its_payment_is_still_reported(
        self, surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """The api's outbox may publish a WatchAddress after the customer paid and the scan
        passed that slot: the late owner's ATAs are looked up over the scanned slots."""
        kafka = broker.bootstrap_servers
        early, late = owners(2)
        await watch(kafka, [str(early.pubkey())])
        async with running(create_app(solana_settings(kafka, redis_server.url, chains))) as app:
            scanner = app.scanner
            assert scanner is not None
            sig = await pay(surfpool, "USDC", late, 7)
            slot = int(rpc(surfpool, "getSignatureStatuses", [[sig]])["value"][0]["slot"])
            await eventually(
                lambda: scanner.cursor is not None and scanner.cursor.number > slot, timeout=20
            )
            await watch(kafka, [str(late.pubkey())])
            seen = await read_transfers(kafka, lambda f: any(t.tx_hash == sig for t in f))
        (found,) = seen
        assert (found.stage, found.amount_raw, found.to_address) == (
            TransferStage.CONFIRMED,
            7,
            str(late.pubkey()),
        )

    async def test_histories_longer_than_a_signature_page(
        self, surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """``getSignaturesForAddress`` pages are 1,000 long on a real node; a page of 3 here
        makes both paths page: the first sweep of a busy ATA (from the top down to the start
        slot, ``before``) and a burst between two polls (``until`` the newest known)."""
        kafka = broker.bootstrap_servers
        (owner,) = owners(1)
        await watch(kafka, [str(owner.pubkey())])
        start = finalized_slot(surfpool) + 1
        before = await pay_fast(surfpool, [("USDT", owner, 100 + i) for i in range(8)])
        settings = solana_settings(
            kafka, redis_server.url, chains, solana_signature_page=3, start_block=start
        )
        async with running(create_app(settings)):
            burst = await pay_fast(surfpool, [("USDT", owner, 200 + i) for i in range(7)])
            seen = await read_transfers(kafka, _confirmed({*before, *burst}), timeout=30)
        confirmed = by_stage(seen)["confirmed"]
        assert sorted(t.amount_raw for t in confirmed) == [
            *range(100, 108),
            *range(200, 207),
        ]
        assert len({identity(t) for t in confirmed}) == len(confirmed) == 15

    async def test_a_dead_rpc_url_is_failed_over(
        self,
        surfpool: Surfpool,
        broker: KafkaServer,
        redis_server: RedisServer,
        tmp_path: Path,
    ) -> None:
        """The primary URL refuses connections: every call goes to the second one, and the
        status names the dead one."""
        kafka = broker.bootstrap_servers
        dead = "http://127.0.0.1:9/"  # discard port: nothing listens
        chains = chains_file(tmp_path / "chains.toml", surfpool, rpc_urls=[dead, surfpool.rpc_url])
        (owner,) = owners(1)
        await watch(kafka, [str(owner.pubkey())])
        async with running(create_app(solana_settings(kafka, redis_server.url, chains))) as app:
            sig = await pay(surfpool, "USDT", owner, 3 * TOKEN)
            seen = await read_transfers(kafka, _confirmed({sig}), timeout=30)
            endpoints = cast(list[dict[str, Any]], app.status()["endpoints"])
            status = {e["endpoint"]: e for e in endpoints}
        assert {t.tx_hash for t in seen} == {sig}
        assert status["http://127.0.0.1:9"]["stale"] is True
        assert status["http://127.0.0.1:9"]["head"] is None
        live = next(e for label, e in status.items() if label != "http://127.0.0.1:9")
        assert live["failures"] == 0
        assert isinstance(app.source, SolanaSource)
