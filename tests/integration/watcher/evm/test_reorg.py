"""Reorgs on a real anvil: the watcher notices them by block hashes (anvil never sends
``removed: true`` logs), rewinds to the fork point and publishes ``reverted`` for transfers
that vanished; what is still on the chain goes on to ``confirmed``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from web3.types import RPCEndpoint

from pago.common.enums import TransferStage
from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.app import create_app
from tests.support.watcher import (
    MODE,
    NETWORK,
    Payment,
    caught_up_to,
    chains_file,
    dump,
    eventually,
    new_addresses,
    pay_in_one_block,
    read_cursors,
    read_transfers,
    running,
    watch,
    watcher_settings,
)


def _rpc(anvil: Anvil, method: str, *params: object) -> object:
    response = anvil.web3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response
    return response.get("result")


def _reorgs() -> float:
    return (
        REGISTRY.get_sample_value("pago_watcher_reorgs_total", {"network": NETWORK, "mode": MODE})
        or 0.0
    )


class TestReorg:
    @pytest.mark.parametrize("how", ["anvil_reorg", "evm_revert"])
    async def test_a_reorg_that_removes_a_detected_transfer_publishes_reverted(
        self,
        anvil: Anvil,
        broker: KafkaServer,
        redis_server: RedisServer,
        tmp_path: Path,
        how: str,
    ) -> None:
        kafka = broker.bootstrap_servers
        chains = chains_file(tmp_path / "chains.toml", anvil, confirmations=5)
        gone, stays = new_addresses(anvil, 2)
        await watch(kafka, [gone, stays])
        reorgs_before = _reorgs()
        settings = watcher_settings(
            kafka, redis_server.url, chains, start_block=anvil.web3.eth.block_number + 1
        )
        async with running(create_app(settings)) as app:
            snapshot = _rpc(anvil, "evm_snapshot")
            (tx_gone,) = await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDT", 1, gone, 11)]
            )
            await asyncio.to_thread(anvil.mine, 1)
            (detected,) = await read_transfers(kafka, lambda f: len(f) >= 1)
            assert (detected.tx_hash, detected.stage) == (tx_gone, TransferStage.DETECTED)

            if how == "anvil_reorg":
                _rpc(anvil, "anvil_reorg", 2, [])  # the two newest blocks, replaced by empty ones
            else:
                _rpc(anvil, "evm_revert", snapshot)  # back to before the payment
                await asyncio.to_thread(anvil.mine, 3)  # a longer chain without it
            (tx_stays,) = await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDC", 2, stays, 12)]
            )
            await asyncio.to_thread(anvil.mine, 6)

            def settled(found: list[object]) -> bool:
                stages = {(t.tx_hash, t.stage) for t in found}  # type: ignore[attr-defined]
                return {
                    (tx_gone, TransferStage.REVERTED),
                    (tx_stays, TransferStage.CONFIRMED),
                } <= stages

            seen = await read_transfers(kafka, settled)  # type: ignore[arg-type]
            # Nothing else may follow (no confirmation of the gone one): the scanner has seen the
            # head and published every confirmation that head allows.
            head = anvil.web3.eth.block_number
            await eventually(lambda: caught_up_to(app, head), what="the scan to catch up")
            seen = await read_transfers(kafka, lambda f: len(f) >= len(seen))

        gone_events = [t for t in seen if t.tx_hash == tx_gone]
        assert [t.stage for t in gone_events] == [TransferStage.DETECTED, TransferStage.REVERTED]
        reverted = gone_events[1]
        assert (reverted.block_hash, reverted.amount_raw, reverted.to_address) == (
            detected.block_hash,
            11,
            gone,
        ), "reverted names the transfer exactly as it was detected"
        assert reverted.confirmations == 0
        assert [t.stage for t in seen if t.tx_hash == tx_stays][-1] is TransferStage.CONFIRMED
        assert _reorgs() > reorgs_before, dump(seen)

    async def test_a_reorg_below_the_cursor_reverts_a_confirmation_and_rescans(
        self, anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, chains: Path
    ) -> None:
        """Deeper than the confirmations (2 here): the confirmed transfer is reverted (the
        matcher raises its alarm), the cursor rewinds to the fork and the new chain is scanned."""
        kafka = broker.bootstrap_servers
        gone, later = new_addresses(anvil, 2)
        await watch(kafka, [gone, later])
        settings = watcher_settings(
            kafka, redis_server.url, chains, start_block=anvil.web3.eth.block_number + 1
        )
        async with running(create_app(settings)) as app:
            (tx_gone,) = await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDT", 1, gone, 21)]
            )
            await asyncio.to_thread(anvil.mine, 3)
            await read_transfers(
                kafka, lambda f: any(t.stage is TransferStage.CONFIRMED for t in f)
            )
            _rpc(anvil, "anvil_reorg", 5, [])
            (tx_later,) = await asyncio.to_thread(
                pay_in_one_block, anvil, [Payment("USDT", 1, later, 22)]
            )
            await asyncio.to_thread(anvil.mine, 3)
            seen = await read_transfers(
                kafka,
                lambda f: any(
                    t.tx_hash == tx_later and t.stage is TransferStage.CONFIRMED for t in f
                ),
            )
            scanner = app.scanner
            assert scanner is not None
            await eventually(
                lambda: (
                    scanner.cursor is not None and scanner.cursor.number >= seen[-1].block_number
                )
            )
            cursor = scanner.cursor
        stages = [t.stage for t in seen if t.tx_hash == tx_gone]
        # (detected only if the head was polled between the payment and the next blocks)
        assert stages[-2:] == [TransferStage.CONFIRMED, TransferStage.REVERTED], dump(seen)
        assert cursor is not None
        block = anvil.web3.eth.get_block(cursor.number)
        assert cursor.hash == block["hash"].to_0x_hex(), "the cursor stands on the new chain"
        last, _ = (await read_cursors(kafka))[-1]
        assert (last.block_number, last.block_hash) == (cursor.number, cursor.hash)
