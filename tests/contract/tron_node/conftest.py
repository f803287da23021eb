"""A local node on a chain with one of everything a client meets: empty blocks, TRC-20
payments, payments through a contract, failed calls, approvals, TRX, other tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.contract.tron_node.support import USDT, Scene
from tests.support.tron_node import TronChain, TronNode


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    chain = TronChain(tokens=[USDT], seed=7)
    chain.mine(5)
    (empty,) = chain.mine(1, noise=0)
    to = chain.stranger()
    paid = chain.trc20_transfer(USDT, to, 1_234_567)
    routed = chain.router_payment(USDT, to, 2_000_000)
    reverted = chain.trc20_transfer(USDT, to, 5, result="REVERT")
    out_of_energy = chain.trc20_transfer(USDT, to, 6, result="OUT_OF_ENERGY")
    approval = chain.approve(USDT, to, 10**12)
    trx = chain.trx_transfer(to, 3_000_000)
    other_token = chain.trc20_transfer(chain.other_token, to, 7)
    (busy,) = chain.mine(1, noise=5)
    chain.mine(25)
    async with TronNode(chain) as node, httpx.AsyncClient(base_url=node.url) as http:
        yield Scene(
            chain,
            node,
            http,
            empty,
            busy,
            paid,
            routed,
            reverted,
            out_of_energy,
            approval,
            trx,
            other_token,
        )
