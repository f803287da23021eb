"""The local node's answers against the documented full-node API (java-tron's HTTP servlets,
``docs/api/http`` of tronprotocol/documentation-en, and ../shared/TESTBED.md)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.contract.tron_node.support import USDT, Scene
from tests.support.tron_node import b58
from tests.support.tron_node.encoding import APPROVAL_TOPIC, TRANSFER_TOPIC

HEX64 = re.compile(r"[0-9a-f]{64}")


class TestBlocks:
    async def test_a_block_links_to_its_parent_and_is_3_s_after_it(self, scene: Scene) -> None:
        n = scene.busy.number
        block = await scene.post("/wallet/getblockbynum", {"num": n})
        parent = await scene.post("/wallet/getblockbynum", {"num": n - 1})
        raw, parent_raw = block["block_header"]["raw_data"], parent["block_header"]["raw_data"]
        assert raw["number"] == n
        assert raw["parentHash"] == parent["blockID"]
        assert raw["timestamp"] - parent_raw["timestamp"] == 3_000
        assert int(block["blockID"][:16], 16) == n, "blockID starts with the height"
        assert HEX64.fullmatch(block["blockID"])
        assert raw["witness_address"].startswith("41")
        assert len(raw["witness_address"]) == 42

    async def test_an_empty_block_has_no_transactions_key(self, scene: Scene) -> None:
        block = await scene.post("/wallet/getblockbynum", {"num": scene.empty.number})
        assert "transactions" not in block
        assert block["block_header"]["raw_data"]["txTrieRoot"] == "0" * 64

    async def test_a_block_not_yet_produced_is_an_empty_object(self, scene: Scene) -> None:
        future = scene.chain.head.number + 1
        assert await scene.post("/wallet/getblockbynum", {"num": future}) == {}
        response = await scene.http.get("/wallet/getblockbynum", params={"num": future})
        assert response.json() == {}

    async def test_the_genesis_header_has_no_number(self, scene: Scene) -> None:
        """Protobuf JSON leaves zero out; also what a missing ``num`` asks for."""
        genesis = await scene.post("/wallet/getblockbynum", {})
        assert "number" not in genesis["block_header"]["raw_data"]
        assert genesis["blockID"].startswith("0" * 16)

    async def test_get_with_a_query_answers_as_post_with_a_body(self, scene: Scene) -> None:
        n = scene.busy.number
        for path in ("/wallet/getblockbynum", "/wallet/gettransactioninfobyblocknum"):
            posted = await scene.http.post(path, json={"num": n})
            got = await scene.http.get(path, params={"num": n})
            assert posted.content == got.content
            assert posted.headers["content-type"].startswith("application/json")
        assert (await scene.http.get("/wallet/getnowblock")).json() == await scene.post(
            "/wallet/getnowblock"
        )

    async def test_getnowblock_is_the_head(self, scene: Scene) -> None:
        now = await scene.post("/wallet/getnowblock")
        assert now["blockID"] == scene.chain.head.id

    async def test_getblockbylimitnext_ends_before_endnum_and_stops_at_100(
        self, scene: Scene
    ) -> None:
        answer = await scene.post("/wallet/getblockbylimitnext", {"startNum": 3, "endNum": 8})
        assert [b["block_header"]["raw_data"]["number"] for b in answer["block"]] == [
            3,
            4,
            5,
            6,
            7,
        ]
        one = await scene.post("/wallet/getblockbynum", {"num": 5})
        assert answer["block"][2] == one
        assert await scene.post("/wallet/getblockbylimitnext", {"startNum": 0, "endNum": 101}) == {}
        head = scene.chain.head.number
        tail = await scene.post(
            "/wallet/getblockbylimitnext", {"startNum": head, "endNum": head + 5}
        )
        assert len(tail["block"]) == 1, "only the blocks that exist"

    async def test_getblockbyid(self, scene: Scene) -> None:
        block = await scene.post("/wallet/getblockbyid", {"value": scene.busy.id})
        assert block == await scene.post("/wallet/getblockbynum", {"num": scene.busy.number})
        assert await scene.post("/wallet/getblockbyid", {"value": "00" * 32}) == {}

    async def test_bad_input_answers_200_with_a_java_error(self, scene: Scene) -> None:
        response = await scene.http.get("/wallet/getblockbynum", params={"num": "ten"})
        assert response.status_code == 200
        assert response.json() == {
            "Error": 'class java.lang.NumberFormatException : For input string: "ten"'
        }
        broken = await scene.http.post("/wallet/getblockbynum", content=b"{not json")
        assert broken.json()["Error"].startswith("class org.tron.json.JSONException")


class TestTransactions:
    async def test_a_trc20_transfer_calls_the_token_with_transfer_calldata(
        self, scene: Scene
    ) -> None:
        tx = await scene.post("/wallet/gettransactionbyid", {"value": scene.paid.txid})
        (contract,) = tx["raw_data"]["contract"]
        assert contract["type"] == "TriggerSmartContract"
        value = contract["parameter"]["value"]
        assert value["contract_address"] == "41" + USDT.hex()
        data = value["data"]
        assert data[:8] == "a9059cbb"  # transfer(address,uint256)
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": scene.paid.txid})
        to_topic = info["log"][0]["topics"][2]
        assert data[8:72] == to_topic, "the recipient word, as the log indexes it"
        assert int(data[72:], 16) == 1_234_567
        assert tx["ret"] == [{"contractRet": "SUCCESS"}]

    async def test_a_failed_call_keeps_its_fee_and_loses_its_logs(self, scene: Scene) -> None:
        for tx, why in ((scene.reverted, "REVERT"), (scene.out_of_energy, "OUT_OF_ENERGY")):
            info = await scene.post("/wallet/gettransactioninfobyid", {"value": tx.txid})
            assert info["result"] == "FAILED"
            assert info["receipt"]["result"] == why
            assert bytes.fromhex(info["resMessage"])
            assert "log" not in info
            assert info["fee"] > 0
            body = await scene.post("/wallet/gettransactionbyid", {"value": tx.txid})
            assert body["ret"] == [{"contractRet": why}]


class TestReceipts:
    async def test_receipts_of_a_block_follow_its_transactions(self, scene: Scene) -> None:
        n = scene.busy.number
        block = await scene.post("/wallet/getblockbynum", {"num": n})
        infos = await scene.post("/wallet/gettransactioninfobyblocknum", {"num": n})
        assert [i["id"] for i in infos] == [t["txID"] for t in block["transactions"]]
        for info in infos:
            assert info["blockNumber"] == n
            assert info["blockTimeStamp"] == block["block_header"]["raw_data"]["timestamp"]

    async def test_empty_future_and_nonpositive_blocks(self, scene: Scene) -> None:
        path = "/wallet/gettransactioninfobyblocknum"
        assert await scene.post(path, {"num": scene.empty.number}) == []
        assert await scene.post(path, {"num": scene.chain.head.number + 1}) == []
        assert await scene.post(path, {"num": 0}) == {}
        assert await scene.post(path, {"num": -3}) == {}

    async def test_a_transfer_log_is_evm_shaped_hex(self, scene: Scene) -> None:
        """TESTBED: log address = 20-byte hex without 41; topics 32-byte hex without 0x;
        topic0 of Transfer is ddf252ad…b3ef; a SUCCESS receipt."""
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": scene.paid.txid})
        assert info["receipt"]["result"] == "SUCCESS"
        assert "result" not in info, "SUCESS is the enum default: left out"
        (log,) = info["log"]
        assert log["address"] == USDT.hex() == "a614f803b6fd780986a42c78ec9c7f77e6ded13c"
        assert log["topics"][0] == TRANSFER_TOPIC.hex()
        assert log["topics"][0].startswith("ddf252ad")
        assert log["topics"][0].endswith("b3ef")
        assert all(HEX64.fullmatch(t) for t in log["topics"])
        assert log["topics"][1][-40:] == scene.paid.owner.hex()
        assert int(log["data"], 16) == 1_234_567
        assert info["contract_address"] == "41" + USDT.hex()

    async def test_a_routed_payment_has_the_transfer_second(self, scene: Scene) -> None:
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": scene.routed.txid})
        first, second = info["log"]
        assert first["address"] == scene.chain.router.hex()
        assert "data" not in first, "an event without unindexed arguments has no data"
        assert second["topics"][0] == TRANSFER_TOPIC.hex()
        assert second["topics"][1][-40:] == scene.chain.router.hex()

    async def test_an_approval_is_not_a_transfer(self, scene: Scene) -> None:
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": scene.approval.txid})
        assert info["log"][0]["topics"][0] == APPROVAL_TOPIC.hex()

    async def test_a_trx_transfer_has_no_contract_receipt(self, scene: Scene) -> None:
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": scene.trx.txid})
        assert "result" not in info["receipt"]
        assert "log" not in info
        assert "contract_address" not in info
        assert info["contractResult"] == [""]

    async def test_visible_spells_every_address_in_base58_logs_included(self, scene: Scene) -> None:
        n = scene.busy.number
        infos = await scene.post(
            "/wallet/gettransactioninfobyblocknum", {"num": n, "visible": True}
        )
        (paid,) = [i for i in infos if i["id"] == scene.paid.txid]
        assert paid["log"][0]["address"] == b58(USDT) == "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
        assert paid["contract_address"] == b58(USDT)
        block = await scene.post("/wallet/getblockbynum", {"num": n, "visible": True})
        assert block["block_header"]["raw_data"]["witness_address"].startswith("T")
        (tx,) = [t for t in block["transactions"] if t["txID"] == scene.paid.txid]
        value = tx["raw_data"]["contract"][0]["parameter"]["value"]
        assert value["contract_address"] == b58(USDT)
        assert value["owner_address"] == b58(scene.paid.owner)
        assert value["data"].startswith("a9059cbb"), "data stays hex"


class TestSolidity:
    async def test_the_solidified_block_trails_the_head_by_19(self, scene: Scene) -> None:
        head = scene.chain.head.number
        solid = await scene.post("/walletsolidity/getnowblock")
        assert solid["block_header"]["raw_data"]["number"] == head - 19
        info = await scene.post("/wallet/getnodeinfo")
        assert info["solidityBlock"] == f"Num:{head - 19},ID:{solid['blockID']}"
        assert await scene.post("/walletsolidity/getblockbynum", {"num": head}) == {}
        assert (await scene.post("/walletsolidity/getblockbynum", {"num": head - 19}))[
            "blockID"
        ] == solid["blockID"]
        assert await scene.post("/walletsolidity/gettransactioninfobyblocknum", {"num": head}) == []


class TestForks:
    async def test_a_fork_replaces_the_newest_blocks_with_a_longer_branch(
        self, scene: Scene
    ) -> None:
        chain = scene.chain
        to = chain.stranger()
        dropped = chain.trc20_transfer(USDT, to, 1)
        kept = chain.trc20_transfer(USDT, to, 2)
        (paid_in,) = chain.mine(1)
        chain.mine(2)
        before = chain.head.number
        replaced = chain.fork(3, drop=[dropped.txid])
        assert [b.number for b in replaced] == [paid_in.number, before - 1, before]
        assert chain.head.number == before + 1, "the new branch is one block longer"
        new = await scene.post("/wallet/getblockbynum", {"num": paid_in.number})
        assert new["blockID"] != paid_in.id
        parent = await scene.post("/wallet/getblockbynum", {"num": paid_in.number - 1})
        assert new["block_header"]["raw_data"]["parentHash"] == parent["blockID"]
        assert await scene.post("/wallet/gettransactioninfobyid", {"value": dropped.txid}) == {}
        info = await scene.post("/wallet/gettransactioninfobyid", {"value": kept.txid})
        assert info["blockNumber"] == paid_in.number
        with pytest.raises(ValueError, match="solidified"):
            chain.fork(25)


class TestDown:
    async def test_503_then_back(self, scene: Scene) -> None:
        await scene.node.down("503")
        response = await scene.http.post("/wallet/getnowblock")
        assert response.status_code == 503
        await scene.node.up()
        assert (await scene.http.post("/wallet/getnowblock")).status_code == 200

    async def test_refuse_closes_the_port_then_back(self, scene: Scene) -> None:
        await scene.node.down("refuse")
        async with httpx.AsyncClient(base_url=scene.node.url) as fresh:
            with pytest.raises(httpx.TransportError):
                await fresh.post("/wallet/getnowblock")
        with pytest.raises(httpx.TransportError):  # a kept-alive connection is cut too
            await scene.http.post("/wallet/getnowblock")
        await scene.node.up()
        async with httpx.AsyncClient(base_url=scene.node.url) as fresh:
            assert (await fresh.post("/wallet/getnowblock")).status_code == 200

    async def test_lag_and_freeze(self, scene: Scene) -> None:
        head = scene.chain.head.number
        scene.node.lag = 4
        now = await scene.post("/wallet/getnowblock")
        assert now["block_header"]["raw_data"]["number"] == head - 4
        assert await scene.post("/wallet/getblockbynum", {"num": head}) == {}
        scene.node.lag = 0
        scene.node.freeze()
        scene.chain.mine(2)
        now = await scene.post("/wallet/getnowblock")
        assert now["block_header"]["raw_data"]["number"] == head
