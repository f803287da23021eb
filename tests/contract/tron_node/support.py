"""Helpers of the tests in this folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.tron_node import Block, TronChain, TronNode, Tx, key_of

RECORDED = Path(__file__).parent / "recorded"


USDT = key_of("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


@dataclass
class Scene:
    chain: TronChain
    node: TronNode
    http: httpx.AsyncClient
    empty: Block
    """A block without transactions."""
    busy: Block
    """A block with every kind of transaction below."""
    paid: Tx
    routed: Tx
    reverted: Tx
    out_of_energy: Tx
    approval: Tx
    trx: Tx
    other_token: Tx

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.http.post(path, json=body or {})
        assert response.status_code == 200, response.text
        return response.json()
