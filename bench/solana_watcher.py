"""The SOLANA watcher: deposits/s detected across 1,000 watched owners, and the RPC calls spent.

1,000 deposit owners (2,000 ATAs: USDT and USDC) are watched; real ``transfer_checked``
deposits go to random ones of them (most create the owner's ATA in the same transaction). Each
phase runs on a fresh Surfpool (its ``getSignaturesForAddress`` slows as history grows):

- **catch-up** (``DEPOSITS`` already finalized, the watcher started below them, detected stage
  off): the real watcher (``create_app``: signature sweeps, transactions, finality checks,
  ``TransferObserved`` published with acks, the cursor) from its first range to its cursor on
  the last deposit's slot, beside a **bare** loop doing only the method's RPC work —
  ``getSignaturesForAddress`` for each ATA and ``getTransaction`` for each signature found, at
  the same concurrency, nothing published. Best of ``RUNS``, alternated.
- **live** (the watcher following the head, at mainnet pace: ``MAINNET_PACE``): after its
  start-up sweep, the calls it spends idle over two finalization windows; then
  ``LIVE_DEPOSITS`` sent as fast as Surfpool takes them: deposits/s detected (first send → last
  detection), detection and confirmation latency (send → ``observed_at``), calls per deposit;
  with balance hints on (the default) and off.
- **budgeted** (``PAGO_WATCHER_SOLANA_RPC_BUDGET`` = 100 calls/s, a provider's paid tier): the
  same with ``BUDGETED_DEPOSITS``, to show where the latency goes when the budget binds.

Every call is counted where it leaves (``RpcStats``: JSON-RPC calls by method, and the HTTP
requests carrying them; Surfpool refuses JSON-RPC batches, so here they are equal).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    transfer_checked,
)
from spl.token.models import TransferCheckedParams

from bench.harness import Servers
from pago.common.enums import Mode, Network, TransferStage
from pago.common.events import TransferObserved, WatchAddress
from pago.common.kafka import create_producer
from pago.common.topics import CHAIN_TRANSFERS, CHAIN_WATCHLIST, watchlist_key
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.surfpool import Surfpool
from pago.watcher.app import WatcherApp, create_app
from pago.watcher.chains.solana import SolanaSource, decode_transaction
from pago.watcher.settings import WatcherSettings

T = TypeVar("T")

OWNERS = 1_000
DEPOSITS = 300
LIVE_DEPOSITS = 100
BUDGETED_DEPOSITS = 20
BUDGET = 100.0
RUNS = 3
CONCURRENCY = 8
"""HTTP requests in flight, for the watcher (its default) and the bare loop alike."""
POLL = 1.0
"""Seconds between head polls in the live runs: the watcher's default."""
MAINNET_PACE = {"slotTimeMs": 400, "blockProductionMode": "clock"}
"""The live runs' simnet: 2.5 slots/s and ``finalized`` 30 slots (12 s) behind, as on mainnet
(Surfpool's default runs 13–40 slots/s, which makes every per-slot cost look 5–15× larger)."""
IDLE_SECONDS = 26.0
"""Two finalization windows at mainnet pace: a window without a sweep would read ~10× low."""
BLOCKHASH_EVERY = 10
"""Deposits per fresh blockhash: Surfpool drops a transaction whose blockhash is 150 slots
old, and its slots come 13–34 a second."""


@dataclass(frozen=True, slots=True)
class Deposit:
    signature: str
    owner: Pubkey
    symbol: str
    units: int
    sent_at: float


class Sender:
    """Deposits from Surfpool's funded payer over one HTTP client (the devstack's ``transfer``
    opens a client per call: 25 a second at best)."""

    def __init__(self, surfpool: Surfpool, http: httpx.AsyncClient) -> None:
        assert surfpool.payer is not None
        self.surfpool = surfpool
        self.payer = surfpool.payer
        self.http = http
        self._blockhash: Hash | None = None
        self._sent = 0

    async def rpc(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        answer = (await self.http.post(self.surfpool.rpc_url, json=body)).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    async def deposit(self, symbol: str, owner: Pubkey, units: int) -> Deposit:
        if self._blockhash is None or self._sent % BLOCKHASH_EVERY == 0:
            latest = await self.rpc("getLatestBlockhash", [{"commitment": "confirmed"}])
            self._blockhash = Hash.from_string(latest["value"]["blockhash"])
        self._sent += 1
        mint = self.surfpool.mint_pubkey(symbol)
        program = self.surfpool.token_program(symbol)
        payer = self.payer.pubkey()
        ixs = [
            create_idempotent_associated_token_account(payer, owner, mint, program),
            transfer_checked(
                TransferCheckedParams(
                    program_id=program,
                    source=get_associated_token_address(payer, mint, program),
                    mint=mint,
                    dest=get_associated_token_address(owner, mint, program),
                    owner=payer,
                    amount=units,
                    decimals=6,
                )
            ),
        ]
        tx = Transaction.new_signed_with_payer(ixs, payer, [self.payer], self._blockhash)
        sent_at = time.time()
        signature = await self.rpc(
            "sendTransaction",
            [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64", "skipPreflight": True}],
        )
        return Deposit(str(signature), owner, symbol, units, sent_at)

    async def slots_of(self, deposits: Sequence[Deposit]) -> list[int]:
        """Each deposit's slot once confirmed (raises if one failed or never landed)."""
        slots: dict[str, int] = {}
        deadline = time.monotonic() + 60
        sigs = [d.signature for d in deposits]
        while len(slots) < len(sigs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(sigs) - len(slots)} deposits never confirmed")
            waiting = [s for s in sigs if s not in slots]
            for lo in range(0, len(waiting), 256):
                chunk = waiting[lo : lo + 256]
                answer = await self.rpc("getSignatureStatuses", [chunk])
                for sig, status in zip(chunk, answer["value"], strict=True):
                    if status and status["confirmationStatus"] in ("confirmed", "finalized"):
                        if status["err"] is not None:
                            raise RuntimeError(f"deposit {sig} failed: {status['err']}")
                        slots[sig] = int(status["slot"])
            await asyncio.sleep(0.1)
        return [slots[s] for s in sigs]

    async def finalized_past(self, slot: int) -> None:
        # Polled: a chain's slot is not an event to await.
        while int(await self.rpc("getSlot", [{"commitment": "finalized"}])) < slot:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _atas(surfpool: Surfpool, owners: Sequence[Pubkey]) -> list[str]:
    return [surfpool.associated_token_address(s, o) for o in owners for s in ("USDT", "USDC")]


async def _bare(
    surfpool: Surfpool, atas: Sequence[str], first: int, last: int
) -> tuple[float, int, int]:
    """Seconds, deposits found and calls spent by the method's RPC work alone."""
    mints = frozenset(surfpool.mints.values())
    followed = set(atas)
    calls = 0
    slots = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def call(method: str, params: list[Any]) -> Any:
            nonlocal calls
            calls += 1
            body = {"jsonrpc": "2.0", "id": calls, "method": method, "params": params}
            async with slots:
                return (await http.post(surfpool.rpc_url, json=body)).json()["result"]

        started = time.perf_counter()
        lists = await asyncio.gather(
            *(
                call("getSignaturesForAddress", [a, {"limit": 1000, "commitment": "confirmed"}])
                for a in atas
            )
        )
        sigs = {
            e["signature"]
            for entries in lists
            for e in entries
            if first <= e["slot"] <= last and e["err"] is None
        }
        options = {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}
        txs = await asyncio.gather(*(call("getTransaction", [s, options]) for s in sigs))
        found = sum(
            1
            for tx in txs
            for credit in decode_transaction(tx, mints).credits
            if credit.account in followed
        )
        return time.perf_counter() - started, found, calls


async def _watch(bootstrap: str, owners: Sequence[Pubkey]) -> None:
    producer = create_producer(bootstrap, client_id="bench-solana-watchlist")
    await producer.start()
    until = datetime.now(UTC) + timedelta(days=1)
    try:
        acks = []
        for owner in owners:
            address = str(owner)
            event = WatchAddress(
                network=Network.SOLANA,
                mode=Mode.TEST,
                address=address,
                session_id="cs_bench",
                watch_until=until,
            )
            key = watchlist_key("SOLANA", "test", address).encode()
            acks.append(await producer.send(CHAIN_WATCHLIST, event.to_bytes(), key=key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def _settings(servers: Servers, bootstrap: str, chains: Path, **over: object) -> WatcherSettings:
    return WatcherSettings.model_validate(
        {
            "network": "SOLANA",
            "mode": "test",
            "kafka_bootstrap_servers": bootstrap,
            "redis_url": servers.redis_url,
            "chains_file": str(chains),
            "leadership": "none",
            "http_port": 0,
            "cursor_interval": 0.0,
            "solana_concurrency": CONCURRENCY,
            "solana_rpc_budget": 0,
            **over,
        }
    )


def _source(app: WatcherApp) -> SolanaSource:
    assert isinstance(app.source, SolanaSource)
    return app.source


async def _watcher_catch_up(
    servers: Servers, chains: Path, owners: Sequence[Pubkey], first: int, last: int
) -> tuple[float, int, dict[str, Any]]:
    """Seconds from the first range to the cursor on ``last``; transfers published; calls."""
    broker = KafkaServer.start(env={})
    try:
        await _watch(broker.bootstrap_servers, owners)
        settings = _settings(
            servers,
            broker.bootstrap_servers,
            chains,
            start_block=first,
            detect_depth="",
            poll_interval=0.05,
        )
        app = create_app(settings)
        source = _source(app)
        task = asyncio.create_task(app.run())
        try:
            # Polled at 1 ms: the cursor is the scanner's own state, not an event to await.
            while app.scanner is None or app.scanner.cursor is None:
                if task.done():
                    await task
                await asyncio.sleep(0.001)
            scanner = app.scanner
            calls, requests = source.stats.calls.copy(), source.stats.http_requests
            started = time.perf_counter()
            while scanner.cursor is None or scanner.cursor.number < last:
                if task.done():
                    await task
                await asyncio.sleep(0.001)
            seconds = time.perf_counter() - started
            spent = source.stats.calls - calls
            http = source.stats.http_requests - requests
        finally:
            app.request_stop()
            await task
        published = await _read(broker.bootstrap_servers)
        confirmed = sum(1 for t in published if t.stage is TransferStage.CONFIRMED)
        return (
            seconds,
            confirmed,
            {
                "calls": sum(spent.values()),
                "http_requests": http,
                "by_method": dict(sorted(spent.items())),
            },
        )
    finally:
        broker.close()


async def _read(bootstrap: str) -> list[TransferObserved]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(CHAIN_TRANSFERS)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(CHAIN_TRANSFERS) or set()
        tps = [TopicPartition(CHAIN_TRANSFERS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[TransferObserved] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(*tps, timeout_ms=200)).values():
                found += [
                    TransferObserved.model_validate_json(r.value)
                    for r in batch
                    if r.value and dict(r.headers).get("event_type") == b"TransferObserved"
                ]
        return found
    finally:
        await consumer.stop()


async def _until(task: asyncio.Task[None], probe: Callable[[], T | None]) -> T:
    """``probe()`` once it is not None (polled: the watcher's state is not an event), unless
    the watcher died; at most 300 s."""
    deadline = time.monotonic() + 300
    while (value := probe()) is None:
        if task.done():
            await task
        if time.monotonic() > deadline:
            raise RuntimeError("the watcher never got there")
        await asyncio.sleep(0.05)
    return value


def _cursor(app: WatcherApp) -> int | None:
    scanner = app.scanner
    if not app.ready() or scanner is None or scanner.cursor is None:
        return None
    return scanner.cursor.number


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def _live(
    servers: Servers,
    chains: Path,
    sender: Sender,
    owners: Sequence[Pubkey],
    deposits: int,
    rng: random.Random,
    **over: object,
) -> dict[str, Any]:
    """The watcher following the head while ``deposits`` arrive; what it took and spent."""
    broker = KafkaServer.start(env={})
    try:
        await _watch(broker.bootstrap_servers, owners)
        app = create_app(
            _settings(servers, broker.bootstrap_servers, chains, poll_interval=POLL, **over)
        )
        source = _source(app)
        task = asyncio.create_task(app.run())
        try:
            started = time.perf_counter()
            # Start-up (the first sweep of every ATA from the top) is not steady state: wait
            # until the cursor moved past where it started, i.e. that sweep is done.
            first = await _until(task, lambda: _cursor(app))
            await _until(task, lambda: True if (_cursor(app) or first) > first else None)
            startup = (time.perf_counter() - started, source.stats.total_calls)
            idle_calls, idle_at = source.stats.total_calls, time.perf_counter()
            await asyncio.sleep(IDLE_SECONDS)
            idle = (source.stats.total_calls - idle_calls) / (time.perf_counter() - idle_at)
            calls, requests = source.stats.calls.copy(), source.stats.http_requests
            began = time.time()
            sent = []
            for i in range(deposits):
                owner = owners[rng.randrange(len(owners))]
                sent.append(await sender.deposit("USDT" if i % 2 else "USDC", owner, 5_000 + i))
            await sender.slots_of(sent)
            wanted = {d.signature for d in sent}
            deadline = time.monotonic() + 180
            while True:
                published = await _read(broker.bootstrap_servers)
                confirmed = {t.tx_hash for t in published if t.stage is TransferStage.CONFIRMED}
                if confirmed >= wanted:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(wanted - confirmed)} deposits never confirmed")
                await asyncio.sleep(0.2)
            spent = source.stats.calls - calls
            http = source.stats.http_requests - requests
            waited = source.budget.waited
        finally:
            app.request_stop()
            await task
    finally:
        broker.close()
    first_seen: dict[str, float] = {}
    confirmed_at: dict[str, float] = {}
    for t in published:
        at = t.observed_at.timestamp()
        first_seen.setdefault(t.tx_hash, at)
        if t.stage is TransferStage.CONFIRMED:
            confirmed_at.setdefault(t.tx_hash, at)
    detect = [first_seen[d.signature] - d.sent_at for d in sent]
    confirm = [confirmed_at[d.signature] - d.sent_at for d in sent]
    detected_stage = sum(
        1 for t in published if t.stage is TransferStage.DETECTED and t.tx_hash in wanted
    )
    window = max(first_seen[s] for s in wanted) - began
    total = sum(spent.values())
    return {
        "deposits": deposits,
        "deposits_per_s_sent": round(deposits / (sent[-1].sent_at - began), 1),
        "deposits_per_s_detected": round(deposits / window, 1),
        "published_detected_stage": detected_stage,
        "detect_latency_s_p50": _pct(detect, 0.5),
        "detect_latency_s_p95": _pct(detect, 0.95),
        "confirm_latency_s_p50": _pct(confirm, 0.5),
        "confirm_latency_s_p95": _pct(confirm, 0.95),
        "calls": total,
        "http_requests": http,
        "calls_per_deposit": round(total / deposits, 1),
        "calls_by_method": dict(sorted(spent.items())),
        "startup_seconds": round(startup[0], 1),
        "startup_calls": startup[1],
        "idle_calls_per_s": round(idle, 1),
        "budget_wait_s": round(waited, 2),
    }


@contextlib.asynccontextmanager
async def _chain(
    workdir: Path, name: str, config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Surfpool, Path, Sender]]:
    """A fresh simnet for one phase: Surfpool's ``getSignaturesForAddress`` slows as its
    history grows (1 → 3.8 ms a call over 420 transactions), so phases on one chain would not
    compare."""
    surfpool = await asyncio.to_thread(lambda: Surfpool.start(workdir / name, config=config))
    try:
        chains = workdir / f"{name}.toml"
        lines = ["[networks.SOLANA.test]", f"rpc_urls = [{surfpool.rpc_url!r}]"]
        lines.append(f'genesis_hash = "{surfpool.genesis_hash}"')
        for symbol, mint in surfpool.mints.items():
            lines += [f"[networks.SOLANA.test.tokens.{symbol}]", f'contract = "{mint}"']
            lines += ["decimals = 6"]
        chains.write_text("\n".join(lines) + "\n")
        async with httpx.AsyncClient(timeout=30) as http:
            yield surfpool, chains, Sender(surfpool, http)
    finally:
        surfpool.close()


async def _catch_up(
    servers: Servers, workdir: Path, owners: Sequence[Pubkey], rng: random.Random
) -> dict[str, Any]:
    async with _chain(workdir, "catch-up") as (surfpool, chains, sender):
        atas = _atas(surfpool, owners)
        start = int(await sender.rpc("getSlot", [{"commitment": "confirmed"}])) + 1
        fill_started = time.perf_counter()
        sent = []
        for i in range(DEPOSITS):
            owner = owners[rng.randrange(OWNERS)]
            sent.append(await sender.deposit("USDT" if i % 2 else "USDC", owner, 1_000 + i))
        slots = await sender.slots_of(sent)
        fill_seconds = time.perf_counter() - fill_started
        last = max(slots)
        await sender.finalized_past(last)
        bare_runs: list[tuple[float, int, int]] = []
        watcher_runs: list[tuple[float, int, dict[str, Any]]] = []
        for _ in range(RUNS):
            bare_runs.append(await _bare(surfpool, atas, start, last))
            watcher_runs.append(await _watcher_catch_up(servers, chains, owners, start, last))
    bare = min(bare_runs)
    watcher = min(watcher_runs, key=lambda r: r[0])
    if bare[1] != DEPOSITS or watcher[1] != DEPOSITS:
        raise AssertionError(f"found {bare[1]} (bare), {watcher[1]} (watcher)")
    return {
        "deposits": DEPOSITS,
        "slots": last - start + 1,
        "surfpool_slots_per_s_while_filling": round((last - start) / fill_seconds, 1),
        "runs": RUNS,
        "watcher_seconds": round(watcher[0], 3),
        "watcher_seconds_all": [round(r[0], 3) for r in watcher_runs],
        "watcher_deposits_per_s": round(DEPOSITS / watcher[0], 1),
        "watcher_rpc": watcher[2],
        "bare_seconds": round(bare[0], 3),
        "bare_seconds_all": [round(r[0], 3) for r in bare_runs],
        "bare_deposits_per_s": round(DEPOSITS / bare[0], 1),
        "bare_calls": bare[2],
        "watcher_vs_bare": round(bare[0] / watcher[0], 3),
    }


async def _live_on_fresh_chain(
    servers: Servers,
    workdir: Path,
    name: str,
    owners: Sequence[Pubkey],
    deposits: int,
    rng: random.Random,
    **over: object,
) -> dict[str, Any]:
    async with _chain(workdir, name, MAINNET_PACE) as (_, chains, sender):
        return await _live(servers, chains, sender, owners, deposits, rng, **over)


async def run(servers: Servers) -> dict[str, Any]:
    rng = random.Random(17)
    owners = [Keypair().pubkey() for _ in range(OWNERS)]
    with tempfile.TemporaryDirectory(prefix="pago-bench-solana-") as tmp:
        workdir = Path(tmp)
        catch_up = await _catch_up(servers, workdir, owners, rng)
        live = {
            "hints": await _live_on_fresh_chain(
                servers, workdir, "live-hints", owners, LIVE_DEPOSITS, rng
            ),
            "no_hints": await _live_on_fresh_chain(
                servers,
                workdir,
                "live-no-hints",
                owners,
                LIVE_DEPOSITS,
                rng,
                solana_balance_hints=False,
            ),
        }
        budgeted = {
            "budget_calls_per_s": BUDGET,
            "hints": await _live_on_fresh_chain(
                servers,
                workdir,
                "budget-hints",
                owners,
                BUDGETED_DEPOSITS,
                rng,
                solana_rpc_budget=BUDGET,
            ),
            "no_hints": await _live_on_fresh_chain(
                servers,
                workdir,
                "budget-no-hints",
                owners,
                BUDGETED_DEPOSITS,
                rng,
                solana_rpc_budget=BUDGET,
                solana_balance_hints=False,
            ),
        }
    return {
        "watched_owners": OWNERS,
        "watched_atas": 2 * OWNERS,
        "poll_interval_s": POLL,
        "live_chain": MAINNET_PACE,
        "catch_up": catch_up,
        "live": live,
        "budgeted": budgeted,
    }
