"""The local node against real recorded answers (``recorded/``, sources in its README).

Two kinds of pin: the node's id arithmetic rebuilds the recorded ids from the recorded fields
(so its ``txID``/``raw_data_hex``/``blockID`` are java-tron's, not look-alikes), and its answers
have the recorded answers' shapes, field for field.
"""

from __future__ import annotations

from typing import Any

from tests.contract.tron_node.shapes import shape
from tests.contract.tron_node.support import Scene, recorded
from tests.support.tron_node import encoding as enc
from tests.support.tron_node import key_of


def _rebuild_raw(tx: dict[str, Any]) -> bytes:
    """``Transaction.raw`` from a recorded transaction's JSON fields, by the node's encoder."""
    raw = tx["raw_data"]
    (contract,) = raw["contract"]
    value = contract["parameter"]["value"]
    if contract["type"] == "TriggerSmartContract":
        body = enc.trigger_smart_contract(
            key_of(value["owner_address"]),
            key_of(value["contract_address"]),
            bytes.fromhex(value["data"]),
        )
        kind = enc.TRIGGER_SMART_CONTRACT
    else:
        body = enc.transfer_contract(
            key_of(value["owner_address"]), key_of(value["to_address"]), value["amount"]
        )
        kind = enc.TRANSFER_CONTRACT
    return enc.transaction_raw(
        ref_block_bytes=bytes.fromhex(raw["ref_block_bytes"]),
        ref_block_hash=bytes.fromhex(raw["ref_block_hash"]),
        expiration=raw["expiration"],
        contracts=[enc.contract(kind, contract["type"], body)],
        timestamp=raw["timestamp"],
        fee_limit=raw.get("fee_limit", 0),
    )


class TestIds:
    def test_txid_is_sha256_of_raw_data_hex_as_java_tron_serializes_it(self) -> None:
        for name in (
            "gettransactionbyid_nile_trc20_transfer.json",
            "createtransaction_visible_trx_transfer.json",
        ):
            tx = recorded(name)
            raw = _rebuild_raw(tx)
            assert raw.hex() == tx["raw_data_hex"], name
            assert enc.sha256(raw).hex() == tx["txID"], name

    def test_block_id_is_the_height_then_24_bytes_of_the_header_hash(self) -> None:
        for name in ("getblockbynum_nile_66987565.json", "getnowblock_nile_66987627.json"):
            block = recorded(name)
            raw = block["block_header"]["raw_data"]
            header = enc.block_header_raw(
                timestamp=raw["timestamp"],
                tx_trie_root=bytes.fromhex(raw["txTrieRoot"]),
                parent_hash=bytes.fromhex(raw["parentHash"]),
                number=raw["number"],
                witness_address=bytes.fromhex(raw["witness_address"]),
                version=raw["version"],
            )
            assert enc.block_id(raw["number"], header).hex() == block["blockID"], name

    async def test_the_nodes_own_ids_follow_the_same_rules(self, scene: Scene) -> None:
        block = await scene.post("/wallet/getblockbynum", {"num": scene.busy.number})
        for tx in block["transactions"]:
            assert enc.sha256(_rebuild_raw(tx)).hex() == tx["txID"]
        raw = block["block_header"]["raw_data"]
        header = enc.block_header_raw(
            timestamp=raw["timestamp"],
            tx_trie_root=bytes.fromhex(raw["txTrieRoot"]),
            parent_hash=bytes.fromhex(raw["parentHash"]),
            number=raw["number"],
            witness_address=bytes.fromhex(raw["witness_address"]),
            version=raw["version"],
        )
        assert enc.block_id(raw["number"], header).hex() == block["blockID"]


class TestShapes:
    async def test_a_block_header_is_shaped_like_nile_blocks(self, scene: Scene) -> None:
        ours = await scene.post("/wallet/getblockbynum", {"num": scene.busy.number})
        now = await scene.post("/wallet/getnowblock")
        for name in ("getblockbynum_nile_66987565.json", "getnowblock_nile_66987627.json"):
            real = recorded(name)
            assert shape({k: v for k, v in ours.items() if k != "transactions"}) == shape(real)
            assert shape({k: v for k, v in now.items() if k != "transactions"}) == shape(real)

    async def test_a_trc20_transfer_is_shaped_like_the_recorded_one(self, scene: Scene) -> None:
        block = await scene.post("/wallet/getblockbynum", {"num": scene.busy.number})
        (ours,) = [t for t in block["transactions"] if t["txID"] == scene.paid.txid]
        assert shape(ours) == shape(recorded("gettransactionbyid_nile_trc20_transfer.json"))
        alone = await scene.post("/wallet/gettransactionbyid", {"value": scene.paid.txid})
        assert alone == ours

    async def test_a_trx_transfer_with_visible_is_shaped_like_the_documented_one(
        self, scene: Scene
    ) -> None:
        ours = await scene.post(
            "/wallet/gettransactionbyid", {"value": scene.trx.txid, "visible": True}
        )
        real = recorded("createtransaction_visible_trx_transfer.json")
        # createtransaction answers an unsigned transaction with a "visible" flag; a mined one
        # has its result and signature instead.
        assert shape(ours["raw_data"]) == shape(real["raw_data"])
        assert set(ours) == set(real) - {"visible"} | {"ret", "signature"}

    async def test_receipts_are_shaped_like_the_documented_ones(self, scene: Scene) -> None:
        infos = await scene.post("/wallet/gettransactioninfobyblocknum", {"num": scene.busy.number})
        by_id = {i["id"]: i for i in infos}
        call = recorded("gettransactioninfobyid_nile_contract_call.json")
        (real_log,) = call["log"]
        for tx in (scene.paid, scene.routed, scene.approval):
            ours = by_id[tx.txid]
            # A plain token call makes no internal transactions, and what a call returns is
            # its own business (``transfer`` a bool word, the recorded call nothing).
            documented = {k: v for k, v in call.items() if k != "internal_transactions"}
            masked = {"contractResult": [""], "log": []}
            assert shape(ours | masked) == shape(documented | masked), tx
            assert len(ours["contractResult"]) == 1
            for log in ours["log"]:
                if len(log.get("topics", ())) == 3:  # Transfer, Approval: 3 topics and a word
                    assert shape(log) == shape(real_log)
                else:
                    assert set(log) <= set(real_log)
        trx_infos = recorded("gettransactioninfobyblocknum_nile_66987565.json")
        fields = set(trx_infos[0]) | set(call) | {"result", "resMessage"}
        for info in infos:
            assert set(info) <= fields
        ours_trx = by_id[scene.trx.txid]
        assert shape(ours_trx["contractResult"]) == shape(trx_infos[0]["contractResult"])
        # Bandwidth is either burnt (net_fee) or free (net_usage), never both.
        assert len(set(ours_trx["receipt"]) & {"net_fee", "net_usage"}) == 1

    async def test_node_info_names_the_head_and_the_solidified_block(self, scene: Scene) -> None:
        ours = await scene.post("/wallet/getnodeinfo")
        real = recorded("getnodeinfo_nile.json")
        assert set(real) <= set(ours)
        for key in ("block", "solidityBlock", "beginSyncNum", "configNodeInfo"):
            assert shape(ours[key]) == shape(real[key]) or key == "configNodeInfo"
        head, solid = scene.chain.head, scene.chain.blocks[scene.chain.solid_number]
        assert ours["block"] == f"Num:{head.number},ID:{head.id}"
        assert ours["solidityBlock"] == f"Num:{solid.number},ID:{solid.id}"
