"""The full node's JSON, shaped as java-tron prints it (``JsonFormat`` + ``Util.printBlock``).

The facts pinned here (and checked by ``tests/contract/tron_node`` against recorded answers):

- Protobuf JSON leaves out default values: no ``"number"`` in the genesis header, no ``"fee"``
  on a free transaction, no zero receipt fields, no top-level ``"result"`` on success (the enum
  default, spelled ``SUCESS`` in ``Tron.proto``), no ``"log"`` without logs.
- A block without transactions has no ``"transactions"`` key; a block that does not exist is
  ``{}``; ``gettransactioninfobyblocknum`` of a block without transactions (or not yet
  produced) is ``[]``, of ``num <= 0`` ``{}``.
- ``bytes`` are lowercase hex without ``0x``. Addresses are ``41…`` hex unless ``visible`` is
  true, then base58check ``T…`` — in a log too (``log[].address`` is the bare 20-byte hex
  otherwise: the TVM's EVM-compatible form).
- ``getnodeinfo`` is a Java bean serialized by fastjson, ``visible`` has no effect on it.
"""

from __future__ import annotations

from typing import Any

from tests.support.tron_node import encoding as enc
from tests.support.tron_node.chain import BLOCK_VERSION, Block, Log, Tx

REVERT_MESSAGE = b"REVERT opcode executed".hex()
OUT_OF_ENERGY_MESSAGE = b"Not enough energy for 'SSTORE' operation executing".hex()


def _address(key: bytes, visible: bool) -> str:
    return enc.b58(key) if visible else enc.hex41(key)


def transaction(tx: Tx, visible: bool) -> dict[str, Any]:
    """A transaction as ``Util.printTransactionToJSON`` prints it inside a block."""
    if tx.kind == "TriggerSmartContract":
        value: dict[str, Any] = {
            "data": tx.call_data.hex(),
            "owner_address": _address(tx.owner, visible),
            "contract_address": _address(tx.target, visible),
        }
    else:
        value = {
            "amount": tx.amount,
            "owner_address": _address(tx.owner, visible),
            "to_address": _address(tx.target, visible),
        }
    raw: dict[str, Any] = {
        "contract": [
            {
                "parameter": {"value": value, "type_url": enc.TYPE_URL + tx.kind},
                "type": tx.kind,
            }
        ],
        "ref_block_bytes": tx.ref_block_bytes,
        "ref_block_hash": tx.ref_block_hash,
        "expiration": tx.expiration,
    }
    if tx.fee_limit:
        raw["fee_limit"] = tx.fee_limit
    raw["timestamp"] = tx.timestamp
    return {
        "ret": [{"contractRet": tx.result}],
        "signature": [tx.signature],
        "txID": tx.txid,
        "raw_data": raw,
        "raw_data_hex": tx.raw_hex,
    }


def block(b: Block, visible: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if b.number:
        raw["number"] = b.number
    raw["txTrieRoot"] = b.tx_trie_root
    raw["witness_address"] = _address(b.witness, visible)
    raw["parentHash"] = b.parent
    raw["version"] = BLOCK_VERSION
    raw["timestamp"] = b.timestamp
    out: dict[str, Any] = {
        "blockID": b.id,
        "block_header": {"raw_data": raw, "witness_signature": b.witness_signature},
    }
    if b.txs:
        out["transactions"] = [transaction(tx, visible) for tx in b.txs]
    return out


def info(b: Block, tx: Tx, visible: bool) -> dict[str, Any]:
    """``TransactionInfo`` (``gettransactioninfobyid``, an element of ``…byblocknum``)."""
    energy_fee = tx.energy * 100
    net_fee = tx.net * 1000 if tx.kind == "TriggerSmartContract" else 0
    out: dict[str, Any] = {"id": tx.txid}
    if energy_fee + net_fee:
        out["fee"] = energy_fee + net_fee
    out["blockNumber"] = b.number
    out["blockTimeStamp"] = b.timestamp
    out["contractResult"] = [tx.contract_result]
    if tx.kind == "TriggerSmartContract":
        out["contract_address"] = _address(tx.target, visible)
    receipt: dict[str, Any] = {}
    if energy_fee:
        receipt["energy_fee"] = energy_fee
    if tx.energy:
        receipt["energy_usage_total"] = tx.energy
    if net_fee:
        receipt["net_fee"] = net_fee
    else:
        receipt["net_usage"] = tx.net  # TRX transfers spend free bandwidth
    if tx.kind == "TriggerSmartContract":
        receipt["result"] = tx.result
    out["receipt"] = receipt
    if tx.logs:
        out["log"] = [_log(log, visible) for log in tx.logs]
    if not tx.success:
        out["result"] = "FAILED"
        out["resMessage"] = REVERT_MESSAGE if tx.result == "REVERT" else OUT_OF_ENERGY_MESSAGE
    return out


def _log(log: Log, visible: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"address": enc.b58(log.address) if visible else log.address.hex()}
    if log.topics:  # an anonymous event may have none
        out["topics"] = [t.hex() for t in log.topics]
    if log.data:  # an event without unindexed arguments has no data (protobuf drops b"")
        out["data"] = log.data.hex()
    return out


def infos(b: Block, visible: bool) -> list[dict[str, Any]]:
    return [info(b, tx, visible) for tx in b.txs]


def node_info(head: Block, solid: Block, *, begin_sync: int) -> dict[str, Any]:
    """The fields of ``getnodeinfo`` a client reads, around a plausible rest."""
    return {
        "activeConnectCount": 3,
        "beginSyncNum": begin_sync,
        "block": f"Num:{head.number},ID:{head.id}",
        "cheatWitnessInfoMap": {},
        "configNodeInfo": {
            "codeVersion": "4.8.1",
            "versionNum": "18636",
            "p2pVersion": "11111",
            "listenPort": 18888,
            "discoverEnable": True,
            "maxConnectCount": 30,
            "supportConstant": True,
            "dbVersion": 2,
        },
        "currentConnectCount": 27,
        "machineInfo": {"cpuCount": 16, "javaVersion": "1.8.0_291", "threadCount": 361},
        "passiveConnectCount": 24,
        "peerList": [],
        "solidityBlock": f"Num:{solid.number},ID:{solid.id}",
        "totalFlow": 0,
    }
