"""What the watcher's tests share: a chains file for anvil, the watchlist, token transfers in
batches, and what reached ``chain.transfers`` and ``chain.cursors``.

The watcher under test always runs for real (``create_app`` in-process, or the
``pago-watcher`` entry point as a subprocess) against a real anvil, a real Kafka-protocol
broker and a real Redis; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from pago.common.enums import Mode, Network
from pago.common.events import ChainScanned, CursorCommitted, TransferObserved, WatchAddress
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_CURSORS, CHAIN_TRANSFERS, CHAIN_WATCHLIST, watchlist_key
from pago.devstack._support import drain_in_thread, stop_process
from pago.devstack.anvil import Anvil, find_anvil
from pago.watcher.app import WatcherApp
from pago.watcher.settings import WatcherSettings
from tests.support.kafka import read_topic
from tests.support.rpc_proxy import JsonRpcProxy

NETWORK = "ETHEREUM"
MODE = "test"
USDT = 10**6
"""One 6-decimal test token in base units."""


def chains_file(
    path: Path, anvil: Anvil, *, confirmations: int = 2, chain_id: int | None = None
) -> Path:
    """A registry override mapping ETHEREUM test mode onto ``anvil`` (as ``pago-dev up`` does);
    ``chain_id``: another id than anvil's (a misconfiguration)."""
    lines = [
        f"[networks.{NETWORK}.test]",
        'name = "anvil (tests)"',
        f"chain_id = {chain_id if chain_id is not None else anvil.chain_id}",
        f"confirmations = {confirmations}",
        f"rpc_urls = [{anvil.rpc_url!r}]",
    ]
    for symbol, address in anvil.tokens.items():
        lines += [f"[networks.{NETWORK}.test.tokens.{symbol}]", f'contract = "{address}"']
        lines += ["decimals = 6"]
    path.write_text("\n".join(lines) + "\n")
    return path


def watcher_settings(
    bootstrap: str, redis_url: str, chains: Path, **over: object
) -> WatcherSettings:
    """Fast test timings; anything else as production has it."""
    values: dict[str, object] = {
        "network": NETWORK,
        "mode": MODE,
        "kafka_bootstrap_servers": bootstrap,
        "redis_url": redis_url,
        "chains_file": str(chains),
        "env": "test",
        "http_port": 0,
        "poll_interval": 0.1,
        "cursor_interval": 0.0,
        "lease_ttl": 3.0,
        "lease_renew": 0.5,
        "lease_retry": 0.3,
        "rpc_timeout": 5.0,
        "rpc_backoff_max": 1.0,
        "shutdown_timeout": 10.0,
        **over,
    }
    return WatcherSettings.model_validate(values)


@contextlib.asynccontextmanager
async def running(app: WatcherApp) -> AsyncIterator[WatcherApp]:
    """The app running in this event loop; stopped gracefully (SIGTERM's path) at the end."""
    task = asyncio.create_task(app.run())
    try:
        await eventually(lambda: app.ready() or task.done(), what="the watcher to be ready")
        if task.done():
            await task
        yield app
    finally:
        app.request_stop()
        await asyncio.wait_for(task, timeout=30)


async def eventually(
    probe: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def cursor_reached(app: WatcherApp, number: int) -> bool:
    """Whether the leader's scan cursor is at or past block ``number``."""
    scanner = app.scanner
    return scanner is not None and scanner.cursor is not None and scanner.cursor.number >= number


def caught_up_to(app: WatcherApp, head: int) -> bool:
    """Whether the leader has seen ``head`` and published everything it allows: every
    detection up to it, every confirmation up to its confirmable block (the cursor's there)."""
    status = app.status()
    seen, cursor, confirmable = status.get("head"), status.get("cursor"), status.get("confirmable")
    if not (isinstance(seen, int) and isinstance(cursor, int) and isinstance(confirmable, int)):
        return False
    return seen >= head and cursor >= confirmable


# -- the watchlist ------------------------------------------------------------------------


def _session_of(address: str) -> str:
    """A session id per EVM address (``cs_`` and ten hex digits after the ``0x``)."""
    return f"cs_{address[2:12].lower()}"


class WatchOptions(TypedDict, total=False):
    until: datetime | None
    """The watch's end (default: two hours from now)."""
    created_at: datetime | None
    """The session's creation; None as from an api older than that field."""
    network: Network
    """Default ETHEREUM."""
    session_of: Callable[[str], str]
    """Each address's session id (default: ``cs_`` and ten hex digits of an EVM address)."""


async def watch(bootstrap: str, addresses: Iterable[str], **options: Unpack[WatchOptions]) -> None:
    """Publish ``WatchAddress`` for each address, as the api's outbox does (``created_at``:
    the session's creation; None as from an api older than that field)."""
    producer = create_producer(bootstrap, client_id="watcher-tests")
    await producer.start()
    try:
        await publish_watches(producer, addresses, **options)
    finally:
        await producer.stop()


async def publish_watches(
    producer: AIOKafkaProducer, addresses: Iterable[str], **options: Unpack[WatchOptions]
) -> None:
    """``watch`` on a started producer: ``session_of`` names each address's session."""
    until = options.get("until") or datetime.now(UTC) + timedelta(hours=2)
    network = options.get("network", Network.ETHEREUM)
    session_of = options.get("session_of", _session_of)
    acks = []
    for address in addresses:
        event = WatchAddress(
            network=network,
            mode=Mode.TEST,
            address=address,
            session_id=session_of(address),
            watch_until=until,
            created_at=options.get("created_at"),
        )
        key = watchlist_key(network.value, MODE, address).encode()
        acks.append(await producer.send(CHAIN_WATCHLIST, event.to_bytes(), key=key))
    await asyncio.gather(*acks)


async def unwatch(bootstrap: str, address: str) -> None:
    """A tombstone: stop watching ``address``."""
    producer = create_producer(bootstrap, client_id="watcher-tests")
    await producer.start()
    try:
        key = watchlist_key(NETWORK, MODE, address).encode()
        await producer.send_and_wait(CHAIN_WATCHLIST, None, key=key)
    finally:
        await producer.stop()


# -- the chain ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payment:
    symbol: str
    payer: int
    to: str
    units: int


def pay_in_one_block(anvil: Anvil, payments: Sequence[Payment]) -> list[str]:
    """Send ``payments`` as real ERC-20 transfers mined together in one new block.

    One JSON-RPC batch of ``eth_sendTransaction`` (anvil's unlocked dev accounts) with explicit
    nonces, mined at once with automine off: a batch under automine can strand transactions
    that arrive out of nonce order. Returns the tx hashes in ``payments`` order.
    """
    w3 = anvil.web3
    provider = cast(HTTPProvider, w3.provider)
    nonces: dict[int, int] = {}
    calls: list[tuple[RPCEndpoint, Any]] = []
    for p in payments:
        address = w3.to_checksum_address(anvil.payers[p.payer][0])
        if p.payer not in nonces:
            nonces[p.payer] = int(w3.eth.get_transaction_count(address, "pending"))
        token = anvil.token(p.symbol)
        data = token.encode_abi("transfer", [w3.to_checksum_address(p.to), p.units])
        tx = {
            "from": address,
            "to": token.address,
            "data": data,
            "nonce": hex(nonces[p.payer]),
            "gas": hex(100_000),
        }
        nonces[p.payer] += 1
        calls.append((RPCEndpoint("eth_sendTransaction"), [tx]))
    provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
    try:
        responses = provider.make_batch_request(calls)
        assert isinstance(responses, list), responses
        hashes = [str(r["result"]) for r in responses]
        provider.make_request(RPCEndpoint("evm_mine"), [])
    finally:
        provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
    for tx_hash in hashes:
        receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        assert receipt["status"] == 1, f"transfer {tx_hash} failed"
    return hashes


async def pay_each_until_confirmed(
    anvil: Anvil, bootstrap: str, addresses: Sequence[str], first_units: int
) -> tuple[list[str], list[TransferObserved]]:
    """Pay each of ``addresses`` in one block (1 USDT from payer 1, ``first_units`` plus its
    place in base units), mine the confirmations, and read ``chain.transfers`` until that many
    are confirmed: the payments' hashes and what was read."""
    payments = [Payment("USDT", 1, a, first_units + i) for i, a in enumerate(addresses)]
    hashes = await asyncio.to_thread(pay_in_one_block, anvil, payments)
    await asyncio.to_thread(anvil.mine, 3)
    seen = await read_transfers(bootstrap, lambda f: len(by_stage(f)["confirmed"]) >= len(hashes))
    return hashes, seen


def new_addresses(anvil: Anvil, n: int) -> list[str]:
    """Fresh EIP-55 addresses (no keys kept: deposit addresses are watch-only)."""
    return [anvil.web3.eth.account.create().address for _ in range(n)]


# -- what reached the broker --------------------------------------------------------------


def event_type(record: ConsumerRecord[bytes, bytes]) -> str:
    """The record's ``event_type`` header (every record the watcher writes carries one)."""
    value: bytes = dict(record.headers or ()).get("event_type", b"")
    return value.decode()


def transfers_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[TransferObserved]:
    return [
        TransferObserved.model_validate_json(r.value)
        for r in records
        if r.value and event_type(r) == "TransferObserved"
    ]


def markers_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[ChainScanned]:
    return [
        ChainScanned.model_validate_json(r.value)
        for r in records
        if r.value and event_type(r) == "ChainScanned"
    ]


async def read_transfers(
    bootstrap: str,
    until: Callable[[list[TransferObserved]], bool],
    *,
    timeout: float = 30.0,
) -> list[TransferObserved]:
    """Every ``TransferObserved`` on the broker, read until ``until`` holds."""
    found: list[TransferObserved] = []

    def done(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        found[:] = transfers_of(records)
        return until(found)

    await read_topic(bootstrap, CHAIN_TRANSFERS, until=done, timeout=timeout)
    return found


async def read_all(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end offsets as of now (per partition, in order)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def read_cursors(bootstrap: str) -> list[tuple[CursorCommitted, int]]:
    """Every cursor record in write order, with its fence (``chain.cursors`` has one partition)."""
    return [
        (
            CursorCommitted.model_validate_json(r.value),
            int(dict(r.headers).get("pago-fence", b"0").decode()),
        )
        for r in await read_all(bootstrap, CHAIN_CURSORS)
        if r.value
    ]


def endpoint_counts(metric: str, endpoint: str, by: str) -> dict[str, float]:
    """The counter ``metric``'s totals for ``endpoint`` (a redacted URL), by the label ``by``."""
    found: dict[str, float] = {}
    for family in REGISTRY.collect():
        if family.name == metric:
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels.get("endpoint") == endpoint:
                    found[labels[by]] = found.get(labels[by], 0) + sample.value
    return found


def by_stage(transfers: Iterable[TransferObserved]) -> Mapping[str, list[TransferObserved]]:
    out: dict[str, list[TransferObserved]] = {"detected": [], "confirmed": [], "reverted": []}
    for t in transfers:
        out[t.stage.value].append(t)
    return out


def identity(t: TransferObserved) -> tuple[str, int]:
    return (t.tx_hash, t.log_index)


def dump(transfers: Iterable[TransferObserved]) -> str:
    return json.dumps(
        [(t.stage.value, t.to_address, t.amount_raw, t.block_number) for t in transfers]
    )


# -- RPC endpoints that misbehave -----------------------------------------------------------


class RangeLimitingProxy(JsonRpcProxy):
    """A JSON-RPC proxy in front of a real node that refuses ``eth_getLogs`` over more than
    ``max_blocks`` blocks, worded as Infura does; everything else passes through."""

    def __init__(self, upstream: str, max_blocks: int) -> None:
        super().__init__(upstream)
        self.max_blocks = max_blocks
        self.refused = 0
        self.largest_served = 0

    def _refuse(self, call: dict[str, Any]) -> dict[str, Any] | None:
        if call.get("method") != "eth_getLogs":
            return None
        query = call["params"][0]
        span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
        if span <= self.max_blocks:
            self.largest_served = max(self.largest_served, span)
            return None
        self.refused += 1
        return {
            "jsonrpc": "2.0",
            "id": call.get("id"),
            "error": {"code": -32005, "message": "query returned more than 10000 results"},
        }

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        refusals = [self._refuse(c) for c in calls]
        if any(refusals):
            answered = [r for r in refusals if r is not None]
            if isinstance(body, list):
                # Refuse the refused ones, forward the rest, answer in order.
                rest = [c for c, r in zip(calls, refusals, strict=True) if r is None]
                forwarded = await self._forward(rest) if rest else []
                by_id = {r["id"]: r for r in [*answered, *forwarded]}
                return web.json_response([by_id[c.get("id")] for c in calls])
            return web.json_response(answered[0])
        return web.json_response(await self._forward(body))


def _spawn_anvil(args: list[str], name: str, port: int = 0) -> Iterator[str]:
    proc = subprocess.Popen(
        [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        fd, seen, deadline = proc.stdout.fileno(), b"", time.monotonic() + 15
        while (match := re.search(rb"Listening on (\S+):(\d+)", seen)) is None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"{name} did not start: {seen[-2000:]!r}")
            seen += chunk
        drain = drain_in_thread(proc.stdout, None, name)
        yield f"http://{match.group(1).decode()}:{match.group(2).decode()}"
    finally:
        stop_process(proc, drain=locals().get("drain"))


@contextlib.contextmanager
def other_chain(chain_id: int, port: int = 0) -> Iterator[str]:
    """A real node of another chain (anvil with ``--chain-id``): a misconfigured endpoint, e.g. a
    testnet node behind a mainnet watcher. Yields its URL."""
    yield from _spawn_anvil(["--chain-id", str(chain_id)], "anvil-other-chain", port)


@contextlib.contextmanager
def live_fork(anvil: Anvil) -> Iterator[str]:
    """A second node of the same chain (anvil forked from ``anvil``; same chain id), to be
    stopped while a watcher uses it. Yields its URL."""
    yield from _spawn_anvil(["--fork-url", anvil.rpc_url], "anvil-live-fork")


@contextlib.contextmanager
def frozen_fork(anvil: Anvil) -> Iterator[str]:
    """A second, real node with the same chain up to now whose head never moves again: anvil
    forked from ``anvil`` with mining off (a node that stopped syncing). Yields its URL."""
    yield from _spawn_anvil(["--fork-url", anvil.rpc_url, "--no-mining"], "anvil-fork")


def assert_cursor_never_ahead(
    transfers: Sequence[ConsumerRecord[bytes, bytes]],
    cursors: Sequence[ConsumerRecord[bytes, bytes]],
) -> None:
    """Every cursor record came after a confirmed record of every transfer at or below its
    block (producer timestamps, ms; the watcher writes a cursor only after the acks)."""
    first_confirmed: dict[tuple[str, int], tuple[int, int]] = {}
    for record in transfers:
        if event_type(record) != "TransferObserved":
            continue
        t = TransferObserved.model_validate_json(record.value)
        if t.stage.value == "confirmed":
            key = (t.tx_hash, t.log_index)
            seen = first_confirmed.get(key)
            if seen is None or record.timestamp < seen[1]:
                first_confirmed[key] = (t.block_number, record.timestamp)
    for record in cursors:
        cursor = CursorCommitted.model_validate_json(record.value)
        for (tx, _), (block, ts) in first_confirmed.items():
            if block <= cursor.block_number:
                assert ts <= record.timestamp, (
                    f"cursor {cursor.block_number} written before {tx} (block {block}) was"
                )


async def write_cursor(bootstrap: str, anvil: Anvil, number: int) -> None:
    """A cursor record as a previous run would have left it (block ``number``, its hash)."""
    block_hash = anvil.web3.eth.get_block(number)["hash"].to_0x_hex()
    event = CursorCommitted(
        network=Network.ETHEREUM,
        mode=Mode.TEST,
        block_number=number,
        block_hash=block_hash,
        committed_at=datetime.now(UTC),
    )
    producer = create_producer(bootstrap, client_id="watcher-tests")
    await producer.start()
    try:
        await producer.send_and_wait(
            CHAIN_CURSORS, event.to_bytes(), key=f"{NETWORK}:{MODE}".encode()
        )
    finally:
        await producer.stop()
