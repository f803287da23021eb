"""``TronSource`` against the local node, without the rest of the watcher: what it refuses to
read as "no transfers", and the identity it gives a transfer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pago.common.enums import Mode, Network, Token
from pago.common.networks import TokenSpec
from pago.watcher.chains.tron import TronSource
from pago.watcher.core.rpc import RpcError
from pago.watcher.core.source import ChainSource
from tests.support.tron_node import Block, TronChain, TronNode, b58
from tests.support.watcher_tron import USDT_CONTRACT, USDT_KEY

TOKENS = {Token.USDT: TokenSpec(Token.USDT, USDT_CONTRACT, 6)}


@pytest.fixture
async def source(node: TronNode) -> AsyncIterator[TronSource]:
    src = TronSource.connect(
        Network.TRON, Mode.TEST, TOKENS, [node.url], timeout=2.0, stale_blocks=1_000_000
    )
    try:
        yield src
    finally:
        await src.aclose()


class _ReceiptsLag(TronNode):
    """A node whose receipt index is behind its blocks (a provider routing the two calls to
    different backends): receipts of a block it has not indexed come back ``[]``."""

    def __init__(self, chain: TronChain, behind_from: int) -> None:
        super().__init__(chain)
        self.behind_from = behind_from

    def _infos_json(self, block: Block | None, visible: bool) -> bytes:
        if block is not None and block.number >= self.behind_from:
            return b"[]"
        return super()._infos_json(block, visible)


def test_is_a_chain_source(source: TronSource) -> None:
    assert isinstance(source, ChainSource)
    assert source.key_size == 20


def test_addresses_are_base58check_of_41_and_20_bytes(source: TronSource) -> None:
    key = source.address_key(USDT_CONTRACT)
    assert key == USDT_KEY
    assert source.address_text(key) == USDT_CONTRACT
    mainnet = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
    assert source.address_key(mainnet).hex() == "a614f803b6fd780986a42c78ec9c7f77e6ded13c"
    for wrong in (
        "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c",  # EVM spelling
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u",  # checksum off by one letter
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",  # base58check, but not 0x41
    ):
        with pytest.raises(ValueError, match="TRON address"):
            source.address_key(wrong)


async def test_identity_is_the_txid_and_the_logs_place_in_its_block(
    chain: TronChain, source: TronSource
) -> None:
    to = chain.stranger()
    txs = [chain.trc20_transfer(USDT_KEY, to, n) for n in (1, 2, 3)]
    routed = chain.router_payment(USDT_KEY, to, 4)
    chain.mine(1, noise=40)
    chain.mine(2)
    head = (await source.head()).latest
    number = head - 2
    whole = await source.transfers(number - 1, head, frozenset({to}))
    alone = await source.transfers(number, number, frozenset({to}))
    again = await source.transfers(number - 1, head, frozenset({to}))
    ids = [(t.tx_hash, t.log_index) for t in whole.transfers]
    assert ids == [(t.tx_hash, t.log_index) for t in alone.transfers]
    assert ids == [(t.tx_hash, t.log_index) for t in again.transfers]
    block = chain.blocks[number]
    positions: dict[str, list[int]] = {}
    at = 0
    for tx in block.txs:  # every log of the block counts, whatever emitted it
        positions[tx.txid] = list(range(at, at + len(tx.logs)))
        at += len(tx.logs)
    assert sorted(ids) == sorted(
        [(tx.txid, positions[tx.txid][0]) for tx in txs]
        + [(routed.txid, positions[routed.txid][1])]
    )
    assert {t.to_address for t in whole.transfers} == {b58(to)}
    assert (whole.parent_hash, whole.end_hash) == (chain.blocks[number - 2].id, chain.head.id)


async def test_blocks_are_the_chain_hash_linked(chain: TronChain, source: TronSource) -> None:
    chain.mine(100)
    head = (await source.head()).latest
    refs = await source.blocks(0, head)
    assert [(r.number, r.hash, r.parent_hash) for r in refs] == [
        (b.number, b.id, b.parent) for b in chain.blocks
    ]
    assert len(refs) > 100, "more than one getblockbylimitnext call"


async def test_a_node_that_lost_its_newest_blocks_is_not_read_as_empty(
    chain: TronChain, node: TronNode, source: TronSource
) -> None:
    """It reported block N, then falls behind (a resync): its ``{}`` for block N must fail the
    range, never pass as a range without transfers."""
    to = chain.stranger()
    chain.trc20_transfer(USDT_KEY, to, 5)
    chain.mine(3)
    head = (await source.head()).latest
    node.lag = 3
    with pytest.raises(RpcError):
        await source.transfers(head - 2, head, frozenset({to}))
    node.lag = 0
    found = await source.transfers(head - 2, head, frozenset({to}))
    assert [t.amount_raw for t in found.transfers] == [5]


async def test_receipts_that_lag_their_blocks_are_not_read_as_empty(chain: TronChain) -> None:
    to = chain.stranger()
    chain.trc20_transfer(USDT_KEY, to, 6)
    (block,) = chain.mine(1)
    async with _ReceiptsLag(chain, behind_from=block.number) as lagging:
        src = TronSource.connect(Network.TRON, Mode.TEST, TOKENS, [lagging.url], timeout=2.0)
        try:
            head = (await src.head()).latest
            with pytest.raises(RpcError):
                await src.transfers(block.number, head, frozenset({to}))
            lagging.behind_from = head + 1
            found = await src.transfers(block.number, head, frozenset({to}))
        finally:
            await src.aclose()
    assert [t.amount_raw for t in found.transfers] == [6]
