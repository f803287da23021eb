"""TRON at the byte level: addresses, and the protobuf bytes that hash into ids.

A transaction's ``txID`` is SHA-256 of its serialized ``Transaction.raw`` (``raw_data_hex``), and
a block's ``blockID`` is its height (8 bytes, big-endian) followed by the last 24 bytes of
SHA-256 of its serialized ``BlockHeader.raw`` — both as java-tron computes them, so ids minted
here check out with tronpy's own serializer (``tests/contract/tron_node``). Only the fields
the node fills in are encoded, in field-number order and without defaults, as protobuf does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import base58

PREFIX = b"\x41"
"""The first byte of every TRON account address."""
TRANSFER_TOPIC = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
"""keccak256("Transfer(address,address,uint256)")."""
APPROVAL_TOPIC = bytes.fromhex("8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925")
"""keccak256("Approval(address,address,uint256)")."""
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
"""``transfer(address,uint256)``."""
APPROVE_SELECTOR = bytes.fromhex("095ea7b3")
"""``approve(address,uint256)``."""

TRIGGER_SMART_CONTRACT = 31
"""``Transaction.Contract.ContractType.TriggerSmartContract``."""
TRANSFER_CONTRACT = 1
"""``Transaction.Contract.ContractType.TransferContract`` (TRX itself)."""
TYPE_URL = "type.googleapis.com/protocol."


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b58(key: bytes) -> str:
    """``T…`` for a 20-byte account key."""
    return str(base58.b58encode_check(PREFIX + key).decode())


def hex41(key: bytes) -> str:
    """``41…`` hex, how the API spells an address when ``visible`` is false."""
    return "41" + key.hex()


def key_of(address: str) -> bytes:
    """The 20 bytes of ``T…``, ``41…`` (42 hex) or a bare 40-hex address."""
    if len(address) == 42 and address.startswith("41"):
        return bytes.fromhex(address[2:])
    if len(address) == 40:
        return bytes.fromhex(address)
    raw = base58.b58decode_check(address)
    if len(raw) != 21 or raw[:1] != PREFIX:
        raise ValueError(f"not a TRON address: {address!r}")
    return raw[1:]


def word(value: int | bytes) -> bytes:
    """One 32-byte ABI word: an unsigned integer, or an address left-padded with zeros."""
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return value.to_bytes(32, "big")


# -- protobuf (proto3 wire format) ---------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value if value else b""


def trigger_smart_contract(
    owner: bytes, contract: bytes, data: bytes, call_value: int = 0
) -> bytes:
    return (
        _bytes(1, PREFIX + owner)
        + _bytes(2, PREFIX + contract)
        + _int(3, call_value)
        + _bytes(4, data)
    )


def transfer_contract(owner: bytes, to: bytes, amount: int) -> bytes:
    return _bytes(1, PREFIX + owner) + _bytes(2, PREFIX + to) + _int(3, amount)


def contract(kind: int, type_name: str, value: bytes) -> bytes:
    """``Transaction.Contract{type, parameter: Any{type_url, value}}``."""
    parameter = _bytes(1, (TYPE_URL + type_name).encode()) + _bytes(2, value)
    return _int(1, kind) + _bytes(2, parameter)


def transaction_raw(
    *,
    ref_block_bytes: bytes,
    ref_block_hash: bytes,
    expiration: int,
    contracts: Sequence[bytes],
    timestamp: int,
    fee_limit: int,
) -> bytes:
    """``Transaction.raw``: fields 1, 4, 8, 11, 14, 18."""
    return (
        _bytes(1, ref_block_bytes)
        + _bytes(4, ref_block_hash)
        + _int(8, expiration)
        + b"".join(_bytes(11, c) for c in contracts)
        + _int(14, timestamp)
        + _int(18, fee_limit)
    )


def block_header_raw(
    *,
    timestamp: int,
    tx_trie_root: bytes,
    parent_hash: bytes,
    number: int,
    witness_address: bytes,
    version: int,
) -> bytes:
    """``BlockHeader.raw``: fields 1, 2, 3, 7, 9, 10."""
    return (
        _int(1, timestamp)
        + _bytes(2, tx_trie_root)
        + _bytes(3, parent_hash)
        + _int(7, number)
        + _bytes(9, witness_address)
        + _int(10, version)
    )


def block_id(number: int, header_raw: bytes) -> bytes:
    """java-tron's ``BlockId``: the height in the first 8 bytes, so ids sort by height."""
    return number.to_bytes(8, "big") + sha256(header_raw)[8:]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Pairwise SHA-256 up to one root (an odd node is carried up as is); 32 zero bytes for
    an empty block, as java-tron shows it. (java-tron hashes the signed transactions; nothing
    that reads this node checks the root.)"""
    level = list(leaves)
    if not level:
        return bytes(32)
    while len(level) > 1:
        nxt = [sha256(level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
