"""Solana JSON-RPC over HTTP for the SOLANA source: batches, a call budget, priorities, counts.

- **Batches**: calls go out as JSON-RPC batches of up to ``batch_size``; a node that refuses
  batches (Surfpool answers ``-32600 Only method calls are supported``; some providers cap or
  bill them) is remembered and gets single calls instead, ``concurrency`` at a time.
- **Budget**: a token bucket over *calls* (each entry of a batch is one call: that is how
  Solana RPC providers meter and rate-limit), shared by everything one source sends. A caller
  takes its tokens before the call and outside the endpoint's timeout, so a tight budget makes
  the watcher slower, never an endpoint "failed".
- **Priorities**: a ``PriorityGate`` lets the head, blocks and balance hints go before the
  signature sweeps behind the confirmed stage.
- **Counts**: calls by method and HTTP requests, in Prometheus and in ``RpcStats`` (the bench
  reads them).

``SolanaRpc`` puts these together for one source: every call it sends is paid for, let through
the gate, spread over the pool's endpoints in batches, and answered with the slot through which
the answering endpoint vouches that its answers are complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import Counter as PromCounter

from pago.watcher.core.rpc import EndpointPool, RpcError

RPC_CALLS = PromCounter(
    "pago_watcher_solana_rpc_calls_total",
    "Solana JSON-RPC calls sent, by method (each entry of a batch counts once)",
    ["network", "method"],
)
HTTP_REQUESTS = PromCounter(
    "pago_watcher_solana_http_requests_total",
    "HTTP requests carrying Solana JSON-RPC calls (a batch is one request)",
    ["network"],
)
BUDGET_WAIT = PromCounter(
    "pago_watcher_solana_budget_wait_seconds_total",
    "Seconds spent waiting for the RPC call budget (grows while the budget binds)",
    ["network"],
)

NO_BATCH_CODES = frozenset({-32600, -32601})
"""Whole-batch refusals: the node takes single calls only."""

Call = tuple[str, list[Any]]

INDEX_MARGIN = 2
"""Slots below the confirmed slot before the source vouches for one: Surfpool's confirmed slot
can still take transactions (23 of 60 deposits sent in one second landed in a slot after it was
first read), and Agave writes transaction statuses (what ``getSignaturesForAddress`` reads)
asynchronously. 0.8 s on mainnet."""
URGENT, BULK = 0, 1
"""Gate priorities: the head, blocks, balance hints and what they trigger go before the
signature sweeps behind the confirmed stage."""
CONFIRMED = {"commitment": "confirmed"}


class SolanaRpcError(RpcError):
    """A call answered with a JSON-RPC error (another endpoint, or a retry, may do better)."""

    def __init__(self, method: str, error: Any) -> None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        super().__init__(f"{method}: {code} {message}")
        self.code = code
        self.message = str(message)


@dataclass
class CallBudget:
    """At most ``rate`` calls per second on average, in bursts of up to ``burst``.

    A debt model: ``take(n)`` reserves ``n`` tokens at once (the balance may go negative) and
    sleeps until its reservation is paid for, so takers are served in arrival order and a
    batch larger than the burst simply waits longer. ``rate`` 0 means unlimited.
    """

    rate: float
    burst: float = 0.0
    """Tokens the bucket holds at most; 0: one second's worth (``rate``)."""
    clock: Callable[[], float] = time.monotonic
    waited: float = field(default=0.0, init=False)
    """Seconds spent waiting in ``take``, in total."""
    _tokens: float = field(default=0.0, init=False)
    _at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError("the call budget must be >= 0 (0: unlimited)")
        if self.burst <= 0:
            self.burst = max(self.rate, 1.0)
        self._tokens = self.burst
        self._at = self.clock()

    async def take(self, n: int) -> float:
        """Reserve ``n`` calls; return the seconds waited."""
        if self.rate <= 0 or n <= 0:
            return 0.0
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self.waited += wait
        await asyncio.sleep(wait)
        return wait


class PriorityGate:
    """At most ``slots`` holders at once; waiters are let in by priority (lower first), then in
    arrival order. Held *outside* an endpoint's timeout, so waiting here never fails a node.

    The SOLANA source sweeps thousands of ATAs at bulk priority; the head, the balance hints
    and the polls they trigger go first, so detection never waits for a sweep to finish.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def acquire(self, priority: int = 0) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as it was cancelled: pass the slot on
            else:
                self._waiters = [w for w in self._waiters if w[2] is not future]
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the waiter
                return
        self._free += 1

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = 0) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


@dataclass
class RpcStats:
    """What one source spent: JSON-RPC calls by method, and the HTTP requests carrying them."""

    calls: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.total_calls,
            "http_requests": self.http_requests,
            "by_method": dict(sorted(self.calls.items())),
        }


class SolanaNode:
    """One endpoint: an HTTP client, whether the node takes batches, its finalized slot."""

    def __init__(
        self,
        url: str,
        network: str,
        stats: RpcStats,
        *,
        timeout: float = 10.0,
        batch_size: int = 100,
        concurrency: int = 8,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be >= 1")
        self.url = url
        self.batch_size = batch_size
        self.takes_batches: bool | None = None if batch_size > 1 else False
        """None until the node answered a batch (or refused one)."""
        self.finalized: int | None = None
        """The node's ``finalized`` slot at its last head poll."""
        self.vouched = -1
        """The newest slot this node has shown complete (its head polls and the ``context``
        slots of its answers, less the source's margin): a later signature list from it holds
        every signature up to here."""
        self._network = network
        self._stats = stats
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._next_id = 0

    def _count(self, calls: Sequence[Call]) -> None:
        self._stats.http_requests += 1
        HTTP_REQUESTS.labels(self._network).inc()
        for method, _ in calls:
            self._stats.calls[method] += 1
            RPC_CALLS.labels(self._network, method).inc()

    def _request(self, method: str, params: list[Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}

    async def _post(self, body: Any, calls: Sequence[Call]) -> Any:
        async with self._slots:
            self._count(calls)
            try:
                response = await self._http.post(self.url, json=body)
            except httpx.HTTPError as exc:
                raise RpcError(f"{calls[0][0]}: {type(exc).__name__} {exc}") from exc
        if response.status_code >= 400 and not response.content.startswith((b"{", b"[")):
            raise RpcError(f"{calls[0][0]}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise RpcError(f"{calls[0][0]}: not JSON (HTTP {response.status_code})") from exc

    async def call(self, method: str, params: list[Any]) -> Any:
        """One call's ``result``; raises ``SolanaRpcError`` on a JSON-RPC error."""
        answer = await self._post(self._request(method, params), [(method, params)])
        if not isinstance(answer, dict):
            raise RpcError(f"{method}: unexpected answer {str(answer)[:200]}")
        if answer.get("error") is not None:
            raise SolanaRpcError(method, answer["error"])
        return answer.get("result")

    async def calls(self, calls: Sequence[Call]) -> list[Any]:
        """Every call's ``result``, in order (batched where the node allows); raises on the
        first JSON-RPC error."""
        results: list[Any] = []
        for lo in range(0, len(calls), self.batch_size):
            chunk = calls[lo : lo + self.batch_size]
            if len(chunk) > 1 and self.takes_batches is not False:
                answered = await self._batch(chunk)
                if answered is not None:
                    results += answered
                    continue
            results += await asyncio.gather(*(self.call(m, p) for m, p in chunk))
        return results

    async def _batch(self, chunk: Sequence[Call]) -> list[Any] | None:
        """The chunk's results, or None if the node refuses batches (remembered)."""
        requests = [self._request(method, params) for method, params in chunk]
        answer = await self._post(requests, chunk)
        if isinstance(answer, dict):
            error = answer.get("error") or {}
            if error.get("code") in NO_BATCH_CODES or "batch" in str(error).lower():
                self.takes_batches = False
                return None
            raise SolanaRpcError(chunk[0][0], error or {"message": "batch failed"})
        if not isinstance(answer, list) or len(answer) != len(chunk):
            raise RpcError(f"a batch of {len(chunk)} answered with {str(answer)[:200]}")
        self.takes_batches = True
        by_id = {entry.get("id"): entry for entry in answer if isinstance(entry, dict)}
        results = []
        for (method, _), request in zip(chunk, requests, strict=True):
            entry = by_id.get(request["id"])
            if entry is None:
                raise RpcError(f"a batch answer lacks the {method} call")
            if entry.get("error") is not None:
                raise SolanaRpcError(method, entry["error"])
            results.append(entry.get("result"))
        return results

    async def aclose(self) -> None:
        await self._http.aclose()


async def genesis_of(node: SolanaNode) -> str:
    """The endpoint's ``getGenesisHash``: which cluster it serves."""
    (genesis,) = await node.calls([("getGenesisHash", [])])
    return str(genesis)


class SolanaRpc:
    """One source's calls: paid for from ``budget`` as they leave, through a ``PriorityGate``
    of ``concurrency`` slots, in chunks of ``batch_size`` over ``pool``.

    ``budget`` is read at each call, so a running source's budget can be replaced.
    """

    def __init__(
        self,
        network: str,
        pool: EndpointPool[SolanaNode],
        budget: CallBudget,
        *,
        batch_size: int = 100,
        concurrency: int = 8,
    ) -> None:
        self.pool = pool
        self.budget = budget
        self._batch_size = batch_size
        self._gate = PriorityGate(concurrency)
        self._heads = {id(ep.client): ep for ep in pool.endpoints}
        self._m_wait = BUDGET_WAIT.labels(network)

    async def take(self, calls: int) -> None:
        waited = await self.budget.take(calls)
        if waited:
            self._m_wait.inc(waited)

    def _head_of(self, node: SolanaNode) -> int:
        endpoint = self._heads.get(id(node))
        head = endpoint.head if endpoint is not None and endpoint.head is not None else -1
        return max(head, node.vouched)

    async def _send(
        self, chunk: Sequence[Call], method: str, min_head: int | None, priority: int
    ) -> tuple[list[Any], int]:
        async def op(node: SolanaNode) -> tuple[list[Any], int]:
            # Read before the calls: everything up to it is complete in their answers.
            head = self._head_of(node)
            results = await node.calls(chunk)
            for result in results:
                if isinstance(result, dict) and isinstance(result.get("context"), dict):
                    slot = int(result["context"].get("slot", -1)) - INDEX_MARGIN
                    node.vouched = max(node.vouched, slot)
            return results, head

        async with self._gate.slot(priority):
            return await self.pool.call(op, method=method, min_head=min_head)

    def _chunk_size(self) -> int:
        """Calls per request: a batch, or one call where the primary refuses batches (a
        100-call chunk of single calls would wait for itself inside the endpoint's timeout)."""
        primary = self.pool.endpoints[0].client
        return 1 if primary.takes_batches is False else self._batch_size

    async def spread(
        self,
        calls: Sequence[Call],
        *,
        method: str,
        min_head: int | None = None,
        priority: int = URGENT,
    ) -> list[tuple[Any, int]]:
        """Each call's result with the confirmed head of the endpoint that answered it.

        Requests are paid for one at a time as they leave, so a call of another loop waits
        behind at most one request of a long sweep for its budget, and not at all for a slot
        (``priority``).
        """
        size = self._chunk_size()
        tasks: list[asyncio.Task[tuple[list[Any], int]]] = []
        try:
            for lo in range(0, len(calls), size):
                chunk = calls[lo : lo + size]
                await self.take(len(chunk))
                tasks.append(asyncio.create_task(self._send(chunk, method, min_head, priority)))
            answers = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [(result, head) for results, head in answers for result in results]

    async def one(self, method: str, params: list[Any], min_head: int | None = None) -> Any:
        ((result, _),) = await self.spread([(method, params)], method=method, min_head=min_head)
        return result
