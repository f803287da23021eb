"""The TRON ``ChainSource`` over a full node's HTTP API (java-tron ``/wallet/*``, TronGrid).

What a range ``[start, end]`` costs: its blocks (``wallet/getblockbylimitnext``, 20 a call;
``wallet/getblockbynum`` for one) and, for each block that has transactions, its receipts
(``wallet/gettransactioninfobyblocknum``), in parallel up to ``max_in_flight`` requests per
source. Only receipts carry logs; TRC-20 ``Transfer`` logs of the registry's contracts in
receipts whose result is ``SUCCESS`` are transfers.

Why the blocks too, when the receipts alone hold the logs: java-tron answers
``gettransactioninfobyblocknum`` for a block it does not have with ``[]``, exactly as for an
empty block, so only the block itself (``{}`` when absent) proves that the endpoint had it.
Its ``blockID`` names the transfers' block (receipts carry no block hash), its ``parentHash``
chains the range to the cursor and the reorg ring, and its transaction ids must equal the
receipts' ids: a block replaced between the two calls (a fork) or a receipt list cut short is
refused and fetched again, never read as "no transfers".

Identity of a transfer (``TransferObserved.tx_hash``, ``log_index``): the transaction id
(``txID``, 64 lowercase hex, no ``0x``, as TRON explorers show it) and the position of the log
among all logs of its block, counted over the receipts in the *block's* transaction order
(receipts are matched to the block's ids, not taken in the order the node lists them), so
every fetch of one block gives every log the same number. Like EVM's ``logIndex``, a
transaction that a fork moves to another block or position gets a new identity: the old one
is published ``reverted`` and the new one ``detected``/``confirmed``, never both credited.

Addresses: the key is the 20 bytes (a log's ``address`` is them in hex without the ``41``
prefix; ``topics`` pad them to 32 bytes, without ``0x``); the text is base58check of
``0x41 ‖ key``, as the api stores ``pay_address``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import aiohttp
import base58

from pago.common.enums import Mode, Network, Token
from pago.common.networks import TokenSpec
from pago.watcher.core.model import BlockRef, ChainHead, Scan, Transfer, block_time
from pago.watcher.core.rpc import EndpointPool, RpcError
from pago.watcher.core.source import WatchView

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak256("Transfer(address,address,uint256)"), as TRON logs spell topics (no ``0x``)."""
ADDRESS_PREFIX = 0x41
"""The first byte of every TRON account address (base58check ``T…``)."""
BLOCKS_PER_CALL = 20
"""Blocks per ``getblockbylimitnext`` (java-tron allows 100): a mainnet block of ~300
transactions is ~400 KB of JSON, so 20 make ~8 MB a page, and ``MAX_IN_FLIGHT`` pages in flight
stay near 100 MB where 100 a page would be half a gigabyte, for one request in 20 blocks."""
MAX_IN_FLIGHT = 16
"""HTTP requests one source has open at once (TronGrid's free tier allows ~15/s per key)."""
TEXT_CACHE = 1 << 16
"""base58check spellings remembered (a double SHA-256 each): payers and deposits repeat."""
API_KEY_HEADER = "TRON-PRO-API-KEY"


class SolidifiedFrom(StrEnum):
    """Where the solidified (final) block number comes from."""

    NODEINFO = "nodeinfo"
    """``wallet/getnodeinfo`` → ``solidityBlock: "Num:<n>,ID:<hex>"`` (one small answer)."""
    WALLETSOLIDITY = "walletsolidity"
    """``walletsolidity/getnowblock`` (for providers that do not serve ``getnodeinfo``)."""


class TronApiError(RpcError):
    """The node answered, but not with what was asked for (``{"Error": …}``, HTTP error)."""


@lru_cache(maxsize=TEXT_CACHE)
def base58_address(key: bytes) -> str:
    """``T…``: base58check of ``0x41 ‖ key`` (what the api stores as ``pay_address``)."""
    return str(base58.b58encode_check(bytes([ADDRESS_PREFIX]) + key).decode())


def address_key(address: str) -> bytes:
    """The 20 bytes of a ``T…`` address; ``ValueError`` if it is not one."""
    try:
        raw = base58.b58decode_check(address)
    except ValueError:
        raise ValueError(f"not a TRON address (base58check): {address!r}") from None
    if len(raw) != 21 or raw[0] != ADDRESS_PREFIX:
        raise ValueError(f"not a TRON address (0x41 and 20 bytes): {address!r}")
    return raw[1:]


def decode_json(content: bytes) -> Any:
    """``json.loads`` with the cyclic collector paused: a page of 100 mainnet-sized blocks is
    ~25 MB and ~2 million containers, which the collector would traverse again and again while
    they are built (3× the decode time, measured by ``make bench``), though JSON cannot hold a
    cycle. Nothing else runs meanwhile: the call never yields to the event loop."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(content)
    finally:
        if enabled:
            gc.enable()


class TronHttp:
    """One full-node HTTP endpoint: POST ``wallet/<method>`` with a JSON body, JSON back.

    aiohttp rather than httpx: on these answers (250 KB per block of 200 transfers, 25 MB per
    page of 100) httpx's async reader was 5–8× slower — 600 such answers, 120 MB, took it
    1.2–1.6 s against aiohttp's 0.17–0.30 s on this machine — most of a catch-up's time.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        max_connections: int = MAX_IN_FLIGHT,
    ) -> None:
        # A trailing slash keeps a provider's path (``…/<token>/``) in front of ``wallet/…``.
        self._base = url.rstrip("/") + "/"
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers[API_KEY_HEADER] = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        """HTTP requests sent (``make bench`` reports requests per block)."""

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will run it (a source may be built
        # before any loop exists, to fail fast on configuration).
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        return self._session

    async def call(self, method: str, body: Mapping[str, Any] | None = None) -> Any:
        """The decoded JSON answer of ``method`` (e.g. ``wallet/getnowblock``)."""
        self.requests += 1
        async with self._http().post(self._base + method, json=dict(body or {})) as response:
            content = await response.read()
            status = response.status
        if status != HTTPStatus.OK:
            raise TronApiError(f"{method}: HTTP {status} {content[:200]!r}")
        try:
            data = decode_json(content)
        except ValueError:
            raise TronApiError(f"{method}: not JSON: {content[:200]!r}") from None
        if isinstance(data, dict) and "Error" in data:
            raise TronApiError(f"{method}: {str(data['Error'])[:300]}")
        return data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class _Block:
    number: int
    id: str
    parent: str
    txids: tuple[str, ...]
    timestamp: int = 0
    """The header's ``timestamp``: unix milliseconds (``blockTimeStamp`` of its receipts)."""

    @classmethod
    def parse(cls, block: Mapping[str, Any]) -> _Block:
        raw = block["block_header"]["raw_data"]
        return cls(
            # Protobuf JSON leaves out zero values: the genesis block has no "number".
            number=int(raw.get("number", 0)),
            id=str(block["blockID"]),
            parent=str(raw["parentHash"]),
            # No "transactions" key at all when a block is empty.
            txids=tuple(str(tx["txID"]) for tx in block.get("transactions", ())),
            timestamp=int(raw.get("timestamp", 0)),
        )

    @property
    def time(self) -> datetime:
        return block_time(self.timestamp / 1000)

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.number, self.id, self.parent)


async def genesis_of(node: TronHttp) -> str:
    """The ``blockID`` of the endpoint's block 0: which TRON network it serves."""
    block = await node.call("wallet/getblockbynum", {"num": 0})
    if not block or "blockID" not in block:
        raise RpcError("getblockbynum 0: no genesis block")
    return str(block["blockID"]).lower()


class TronSource:
    """Transfers of the registry's TRC-20 tokens on TRON (mainnet, Nile, or a local node)."""

    def __init__(
        self,
        network: Network,
        mode: Mode,
        tokens: Mapping[Token, TokenSpec],
        pool: EndpointPool[TronHttp],
        *,
        solidified_from: SolidifiedFrom = SolidifiedFrom.NODEINFO,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if not tokens:
            raise ValueError(f"{network} {mode}: the registry names no token contract")
        self._network = network
        self._mode = mode
        self._pool = pool
        # Logs name their contract as 40 lowercase hex characters (no 41 prefix).
        self._by_log_address = {address_key(s.contract).hex(): s for s in tokens.values()}
        self._solidified_from = solidified_from
        self._gate = asyncio.Semaphore(max_in_flight)

    @classmethod
    def connect(
        cls,
        network: Network,
        mode: Mode,
        tokens: Mapping[Token, TokenSpec],
        urls: Sequence[str],
        *,
        api_key: str | None = None,
        solidified_from: SolidifiedFrom = SolidifiedFrom.NODEINFO,
        max_in_flight: int = MAX_IN_FLIGHT,
        timeout: float = 10.0,
        genesis_hash: str | None = None,
        **pool_options: Any,
    ) -> TronSource:
        """A source over HTTP endpoints ``urls`` (the first one is the primary); with
        ``genesis_hash``, an endpoint whose block 0 has another ``blockID`` is refused."""
        clients = [
            (url, TronHttp(url, api_key=api_key, timeout=timeout, max_connections=max_in_flight))
            for url in urls
        ]
        pool: EndpointPool[TronHttp] = EndpointPool.of(
            network.value,
            clients,
            timeout=timeout,
            identify=genesis_of,
            expected=genesis_hash,
            **pool_options,
        )
        return cls(
            network,
            mode,
            tokens,
            pool,
            solidified_from=solidified_from,
            max_in_flight=max_in_flight,
        )

    # -- identity --------------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return self._network

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def key_size(self) -> int:
        return 20

    @property
    def endpoints(self) -> EndpointPool[TronHttp]:
        return self._pool

    def address_key(self, address: str) -> bytes:
        return address_key(address)

    def address_text(self, key: bytes) -> str:
        return base58_address(key)

    # -- RPC -------------------------------------------------------------------------------

    async def _call(self, node: TronHttp, method: str, body: Mapping[str, Any] | None) -> Any:
        async with self._gate:
            return await node.call(method, body)

    async def _block(self, node: TronHttp, number: int) -> _Block:
        block = await self._call(node, "wallet/getblockbynum", {"num": number})
        if not block:
            raise RpcError(f"endpoint has no block {number}")
        parsed = _Block.parse(block)
        if parsed.number != number:
            raise RpcError(f"asked for block {number}, got {parsed.number}")
        return parsed

    async def _blocks(self, node: TronHttp, start: int, end: int) -> list[_Block]:
        """Blocks ``start..end``, every one of them, hash-linked (else ``RpcError``)."""
        if start == end:
            return [await self._block(node, start)]

        async def chunk(lo: int, hi: int) -> list[_Block]:
            answer = await self._call(
                node, "wallet/getblockbylimitnext", {"startNum": lo, "endNum": hi + 1}
            )
            found = [_Block.parse(b) for b in (answer or {}).get("block", ())]
            if [b.number for b in found] != list(range(lo, hi + 1)):
                raise RpcError(f"endpoint lacks blocks of [{lo}, {hi}]")
            return found

        parts = await asyncio.gather(
            *(
                chunk(lo, min(end, lo + BLOCKS_PER_CALL - 1))
                for lo in range(start, end + 1, BLOCKS_PER_CALL)
            )
        )
        blocks = [b for part in parts for b in part]
        for prev, block in itertools.pairwise(blocks):
            if block.parent != prev.id:
                # Two answers from both sides of a fork: ask again once the node settled.
                raise RpcError(f"block {block.number} does not follow block {prev.number}")
        return blocks

    async def _receipts(self, node: TronHttp, block: _Block) -> list[Mapping[str, Any]]:
        """The receipts of ``block``'s transactions, in the block's order (else ``RpcError``)."""
        answer = await self._call(
            node, "wallet/gettransactioninfobyblocknum", {"num": block.number}
        )
        if not isinstance(answer, list):
            raise RpcError(f"receipts of block {block.number}: not a list")
        by_id = {str(info.get("id")): info for info in answer}
        if len(answer) != len(block.txids) or by_id.keys() != set(block.txids):
            raise RpcError(
                f"receipts of block {block.number} do not match its {len(block.txids)} "
                f"transactions ({len(answer)} answered): the block changed or the node lags"
            )
        return [by_id[txid] for txid in block.txids]

    # -- ChainSource -----------------------------------------------------------------------

    async def head(self, *, finalized: bool = False) -> ChainHead:
        async def now_block(node: TronHttp) -> int:
            block = await node.call("wallet/getnowblock")
            if not block:
                raise RpcError("no head block")
            return _Block.parse(block).number

        latest = await self._pool.refresh_heads(now_block)
        if not finalized:
            return ChainHead(latest)
        if self._solidified_from is SolidifiedFrom.NODEINFO:
            solid = await self._pool.call(self._nodeinfo_solid, method="getnodeinfo")
        else:
            solid = await self._pool.call(self._walletsolidity_solid, method="walletsolidity")
        return ChainHead(latest, min(solid, latest))

    @staticmethod
    async def _nodeinfo_solid(node: TronHttp) -> int:
        info = await node.call("wallet/getnodeinfo")
        text = str(info.get("solidityBlock", ""))  # "Num:<n>,ID:<64 hex>"
        num, _, _ = text.partition(",")
        if not num.startswith("Num:"):
            raise RpcError(f"getnodeinfo: unexpected solidityBlock {text[:100]!r}")
        return int(num.removeprefix("Num:"))

    @staticmethod
    async def _walletsolidity_solid(node: TronHttp) -> int:
        block = await node.call("walletsolidity/getnowblock")
        if not block:
            raise RpcError("no solidified block")
        return _Block.parse(block).number

    async def blocks(self, start: int, end: int) -> list[BlockRef]:
        if end < start:
            return []

        async def fetch(node: TronHttp) -> list[BlockRef]:
            return [b.ref for b in await self._blocks(node, start, end)]

        return await self._pool.call(fetch, method="getblockbylimitnext", min_head=end)

    async def transfers(self, start: int, end: int, watched: WatchView) -> Scan:
        if end < start:
            raise ValueError(f"empty range [{start}, {end}]")

        async def ends(node: TronHttp) -> Scan:
            # Nothing to look for: the blocks at both ends chain the range and name its end.
            first, last = await asyncio.gather(self._block(node, start), self._block(node, end))
            return Scan(start, end, first.parent, last.id, [], last.time)

        async def fetch(node: TronHttp) -> Scan:
            blocks = await self._blocks(node, start, end)
            full = [b for b in blocks if b.txids]
            receipts = await asyncio.gather(*(self._receipts(node, b) for b in full))
            found: list[Transfer] = []
            for block, infos in zip(full, receipts, strict=True):
                self._decode(block, infos, watched, found)
            return Scan(start, end, blocks[0].parent, blocks[-1].id, found, blocks[-1].time)

        return await self._pool.call(
            fetch if watched else ends,
            method="gettransactioninfobyblocknum",
            min_head=end,
            refuse_on_timeout=end > start,
        )

    async def block_time(self, number: int) -> datetime:
        async def fetch(node: TronHttp) -> datetime:
            return (await self._block(node, number)).time

        return await self._pool.call(fetch, method="getblockbynum", min_head=number)

    def _decode(
        self,
        block: _Block,
        infos: Sequence[Mapping[str, Any]],
        watched: WatchView,
        found: list[Transfer],
    ) -> None:
        position = 0
        by_address = self._by_log_address
        when = block.time
        for txid, info in zip(block.txids, infos, strict=True):
            logs = info.get("log") or ()
            first = position
            position += len(logs)
            # A failed call keeps its fee but not its effects: "result": "FAILED" at the top and
            # the VM's verdict (REVERT, OUT_OF_ENERGY…) in the receipt. Only SUCCESS moves tokens.
            # (The top-level enum is spelled SUCESS in Tron.proto and left out when it is.)
            if info.get("result") == "FAILED":
                continue
            if (info.get("receipt") or {}).get("result") != "SUCCESS":
                continue
            for i, entry in enumerate(logs):
                spec = by_address.get(str(entry.get("address", "")).lower())
                if spec is None:
                    continue
                topics: Sequence[Any] = entry.get("topics") or ()
                # TRC-20 Transfer has 3 topics; TRC-721's has a 4th (the token id): not ours.
                if len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC:
                    continue
                to_key = bytes.fromhex(str(topics[2])[-40:])
                if to_key not in watched:
                    continue
                data = str(entry.get("data", ""))
                if len(data) != 64:
                    continue
                found.append(
                    Transfer(
                        token=spec.symbol,
                        contract=spec.contract,
                        tx_hash=txid.lower(),
                        log_index=first + i,
                        block_number=block.number,
                        block_hash=block.id,
                        from_address=base58_address(bytes.fromhex(str(topics[1])[-40:])),
                        to_address=base58_address(to_key),
                        amount_raw=int(data, 16),
                        decimals=spec.decimals,
                        block_time=when,
                    )
                )

    async def check_identity(self) -> None:
        await self._pool.check_identity()

    async def aclose(self) -> None:
        for endpoint in self._pool.endpoints:
            await endpoint.client.aclose()
