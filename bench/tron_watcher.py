"""TRON: the watcher's confirmed scan of 2,000 recorded blocks, beside a bare fetch-and-decode loop.

The chain: the local TRON node (``tests/support/tron_node``, in a subprocess so it never shares
the watcher's CPU) mints 2,000 blocks of 200 USDT (TRC-20) transfers each, to 10,000 recipients,
plus its usual random traffic (TRX, approvals, failed calls, another token), then renders every
``getblockbylimitnext`` page and ``gettransactioninfobyblocknum`` answer once: the runs replay
those recorded bytes (~400 KB of JSON per block), as a real node serves from its database.

The watcher (``create_app``, detected stage off: every block is history; 1,000 of the recipients
watched among 100,000 addresses) scans them from a first start — blocks and receipts fetched in
parallel, receipts matched to the blocks' txIDs, Transfer logs decoded, ~40,000 transfers
published with acks, the cursor written after each range — timed from its first range to its
cursor on the last block. The baseline fetches the same answers with the same HTTP client and
parallelism and only decodes their JSON (plain ``json.loads``; and again with the collector
paused, as the watcher decodes). Target: the watcher at ≥ 50 % of bare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import Servers
from pago.common.enums import Mode, Network
from pago.common.events import WatchAddress
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_WATCHLIST, watchlist_key
from pago.devstack.kafka_mock import KafkaServer
from pago.watcher.app import create_app
from pago.watcher.chains.tron import (
    BLOCKS_PER_CALL,
    MAX_IN_FLIGHT,
    TronHttp,
    decode_json,
    genesis_of,
)
from pago.watcher.settings import WatcherSettings
from tests.support.tron_node import b58
from tests.support.tron_node.process import TronNodeProcess

BLOCKS = 2_000
PER_BLOCK = 200
RECIPIENTS = 10_000
WATCHED = 1_000
EXTRA_WATCHED = 99_000
"""Watched addresses that never receive anything: lookups run against a realistic set."""
CONFIRMATIONS = 19
USDT_CONTRACT = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
"""USDT of TRON test mode in the registry (what the node's logs name)."""
RUNS = 3
TARGET_RATIO = 0.5


async def _bare(
    url: str, first: int, last: int, decode: Callable[[bytes], Any] = json.loads
) -> tuple[float, int, int]:
    """Seconds, receipts and logs for a bare loop: the watcher's requests, sent with the same
    HTTP client and parallelism, answers decoded by ``decode``, nothing else."""
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(path: str, body: dict[str, int]) -> Any:
            async with gate, http.post(url + path, json=body) as response:
                content = await response.read()
            return decode(content)

        async def chunk(lo: int, hi: int) -> tuple[int, int]:
            page = await post("/wallet/getblockbylimitnext", {"startNum": lo, "endNum": hi + 1})
            full = [b for b in page["block"] if b.get("transactions")]
            lists = await asyncio.gather(
                *(
                    post(
                        "/wallet/gettransactioninfobyblocknum",
                        {"num": b["block_header"]["raw_data"]["number"]},
                    )
                    for b in full
                )
            )
            return sum(map(len, lists)), sum(len(i.get("log", ())) for r in lists for i in r)

        started = time.perf_counter()
        parts = await asyncio.gather(
            *(
                chunk(lo, min(last, lo + BLOCKS_PER_CALL - 1))
                for lo in range(first, last + 1, BLOCKS_PER_CALL)
            )
        )
        seconds = time.perf_counter() - started
    return seconds, sum(p[0] for p in parts), sum(p[1] for p in parts)


async def _watch(bootstrap: str, addresses: list[str]) -> None:
    producer = create_producer(bootstrap, client_id="bench-watchlist")
    await producer.start()
    until = datetime.now(UTC) + timedelta(days=1)
    try:
        acks = []
        for address in addresses:
            event = WatchAddress(
                network=Network.TRON,
                mode=Mode.TEST,
                address=address,
                session_id="cs_bench",
                watch_until=until,
            )
            key = watchlist_key("TRON", "test", address).encode()
            acks.append(await producer.send(CHAIN_WATCHLIST, event.to_bytes(), key=key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def _published() -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "pago_watcher_transfers_published_total",
        {"network": "TRON", "mode": "test", "stage": "confirmed"},
    )
    return value or 0.0


async def _watcher_scan(
    servers: Servers, workdir: Path, url: str, watched: list[str], first: int, last: int
) -> tuple[float, int, float]:
    """Seconds from the watcher's first range to its cursor on ``last``; transfers published;
    the median range size over the scan. A broker of its own each time (a cursor left by an earlier
    run would make the watcher resume instead of scanning)."""
    broker = KafkaServer.start(env={})
    try:
        await _watch(broker.bootstrap_servers, watched)
        chains = workdir / "chains.toml"
        node = TronHttp(url)
        try:
            genesis = await genesis_of(node)
        finally:
            await node.aclose()
        chains.write_text(
            f'[networks.TRON.test]\ngenesis_hash = "{genesis}"\nrpc_urls = [{url!r}]\n'
        )
        settings = WatcherSettings.model_validate(
            {
                "network": "TRON",
                "mode": "test",
                "kafka_bootstrap_servers": broker.bootstrap_servers,
                "redis_url": servers.redis_url,
                "chains_file": str(chains),
                "leadership": "none",
                "http_port": 0,
                "start_block": first,
                "detect_depth": "",
                "poll_interval": 0.05,
                "cursor_interval": 0.0,
                "rpc_timeout": 30.0,
            }
        )
        before = _published()
        app = create_app(settings)
        task = asyncio.create_task(app.run())
        try:
            # Polled at 1 ms: the cursor is the scanner's own state, not an event to await.
            while app.scanner is None or app.scanner.cursor is None:
                if task.done():
                    await task
                await asyncio.sleep(0.001)
            scanner = app.scanner
            started = time.perf_counter()
            sizes: list[int] = []
            while scanner.cursor is None or scanner.cursor.number < last:
                if task.done():
                    await task
                sizes.append(scanner.sizer.size)
                await asyncio.sleep(0.001)
            seconds = time.perf_counter() - started
            range_blocks = statistics.median(sizes) if sizes else float(scanner.sizer.size)
        finally:
            app.request_stop()
            await task
        return seconds, int(_published() - before), range_blocks
    finally:
        broker.close()


async def _scan(servers: Servers, workdir: Path) -> dict[str, Any]:
    rng = random.Random(13)
    recipients = [b58(rng.randbytes(20)) for _ in range(RECIPIENTS)]
    watched = recipients[:WATCHED] + [b58(rng.randbytes(20)) for _ in range(EXTRA_WATCHED)]
    node = TronNodeProcess(
        "--token", USDT_CONTRACT, "--seed", "13", "--cache-size", str(3 * BLOCKS)
    )
    try:
        started = time.perf_counter()
        await asyncio.to_thread(
            node.control,
            "payments",
            blocks=BLOCKS,
            per_block=PER_BLOCK,
            recipients=recipients,
            token=USDT_CONTRACT,
        )
        generate_seconds = time.perf_counter() - started
        first = int(node.control("state")["head"]) - BLOCKS + 1
        last = first + BLOCKS - 1
        node.control("mine", blocks=CONFIRMATIONS + 1)  # every minted block behind the depth
        started = time.perf_counter()
        await asyncio.to_thread(node.control, "prerender")
        record_seconds = time.perf_counter() - started
        bare_runs: list[float] = []
        paused_runs: list[float] = []
        watcher_runs: list[float] = []
        requests: list[int] = []
        # Alternated, best of each: this machine is shared, one sample can be off by 3×.
        for _ in range(RUNS):
            bare_seconds, receipts, logs = await _bare(node.url, first, last)
            bare_runs.append(bare_seconds)
            paused_runs.append((await _bare(node.url, first, last, decode_json))[0])
            before = int(node.control("state")["requests"])
            seconds, published, range_blocks = await _watcher_scan(
                servers, workdir, node.url, watched, first, last
            )
            requests.append(int(node.control("state")["requests"]) - before)
            watcher_runs.append(seconds)
    finally:
        node.close()
    watcher_seconds, bare_seconds = min(watcher_runs), min(bare_runs)
    return {
        "blocks": BLOCKS,
        "trc20_transfers_per_block": PER_BLOCK,
        "transactions": receipts,
        "logs": logs,
        "watched_addresses": len(watched),
        "transfers_published_per_run": published,
        "chain_generate_seconds": round(generate_seconds, 1),
        "chain_record_seconds": round(record_seconds, 1),
        "runs": RUNS,
        "watcher_seconds": round(watcher_seconds, 3),
        "watcher_seconds_all": [round(x, 3) for x in watcher_runs],
        "watcher_blocks_per_s": round(BLOCKS / watcher_seconds),
        "watcher_transactions_per_s": round(receipts / watcher_seconds),
        "watcher_transfers_published_per_s": round(published / watcher_seconds),
        "watcher_http_requests_per_block": round(min(requests) / BLOCKS, 3),
        "watcher_range_blocks_median": range_blocks,
        "bare_seconds": round(bare_seconds, 3),
        "bare_seconds_all": [round(x, 3) for x in bare_runs],
        "bare_blocks_per_s": round(BLOCKS / bare_seconds),
        "watcher_vs_bare": round(bare_seconds / watcher_seconds, 3),
        "bare_gc_paused_seconds": round(min(paused_runs), 3),
        "bare_gc_paused_blocks_per_s": round(BLOCKS / min(paused_runs)),
        "watcher_vs_bare_gc_paused": round(min(paused_runs) / watcher_seconds, 3),
        "target_watcher_vs_bare": TARGET_RATIO,
    }


async def run(servers: Servers) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pago-bench-tron-") as tmp:
        scan = await _scan(servers, Path(tmp))
    with contextlib.suppress(OSError):
        scan["cpus"] = len(os.sched_getaffinity(0))
    return scan
