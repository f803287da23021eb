"""tronpy, an independent TRON client, reads the local node as it reads TronGrid: heads, blocks
(by number and by id, ``visible`` addresses), transactions and their receipts. Its calls are
synchronous (``requests``), so they run in a thread while the node serves in this loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from tronpy import Tron
from tronpy.exceptions import BlockNotFound
from tronpy.keys import to_base58check_address
from tronpy.providers import HTTPProvider

from tests.contract.tron_node.support import USDT, Scene
from tests.support.tron_node import b58

T = TypeVar("T")


async def _read(scene: Scene, call: Callable[[Tron], T]) -> T:
    def run() -> T:
        return call(Tron(HTTPProvider(scene.node.url, timeout=10)))

    return await asyncio.to_thread(run)


async def test_heads(scene: Scene) -> None:
    chain = scene.chain
    latest = await _read(scene, lambda t: t.get_latest_block_number())
    latest_id = await _read(scene, lambda t: t.get_latest_block_id())
    solid = await _read(scene, lambda t: t.get_latest_solid_block_number())
    solid_id = await _read(scene, lambda t: t.get_latest_solid_block_id())
    assert (latest, latest_id) == (chain.head.number, chain.head.id)
    assert (solid, solid_id) == (chain.solid_number, chain.blocks[chain.solid_number].id)
    now: dict[str, Any] = await _read(scene, lambda t: t.get_latest_block())
    assert now["blockID"] == chain.head.id


async def test_blocks_by_number_and_by_id(scene: Scene) -> None:
    busy = scene.busy
    block: dict[str, Any] = await _read(scene, lambda t: t.get_block(busy.number))
    assert block["blockID"] == busy.id
    assert len(block["transactions"]) == len(busy.txs)
    header = block["block_header"]["raw_data"]
    assert to_base58check_address(header["witness_address"]) == header["witness_address"]
    (paid,) = [t for t in block["transactions"] if t["txID"] == scene.paid.txid]
    value = paid["raw_data"]["contract"][0]["parameter"]["value"]
    assert value["contract_address"] == b58(USDT), "tronpy asks for visible addresses"
    same: dict[str, Any] = await _read(scene, lambda t: t.get_block(busy.id))
    assert same == block
    empty: dict[str, Any] = await _read(scene, lambda t: t.get_block(scene.empty.number))
    assert "transactions" not in empty


async def test_a_block_not_yet_produced_is_not_found(scene: Scene) -> None:
    future = scene.chain.head.number + 1
    with pytest.raises(BlockNotFound):
        await _read(scene, lambda t: t.get_block(future))


async def test_transactions_and_receipts(scene: Scene) -> None:
    txid = scene.paid.txid
    tx: dict[str, Any] = await _read(scene, lambda t: t.get_transaction(txid))
    info: dict[str, Any] = await _read(scene, lambda t: t.get_transaction_info(txid))
    solid: dict[str, Any] = await _read(scene, lambda t: t.get_solid_transaction_info(txid))
    assert tx["txID"] == txid
    assert tx["ret"] == [{"contractRet": "SUCCESS"}]
    assert info == solid
    assert (info["id"], info["blockNumber"], info["receipt"]["result"]) == (
        txid,
        scene.busy.number,
        "SUCCESS",
    )
    (log,) = info["log"]
    assert log["address"] == b58(USDT), "visible rewrites the log's address to base58"
    failed: dict[str, Any] = await _read(
        scene, lambda t: t.get_transaction_info(scene.reverted.txid)
    )
    assert failed["result"] == "FAILED"
    assert failed["receipt"]["result"] == "REVERT"
