"""Several RPC endpoints for one network: failover, backoff with jitter, stale-head detection.

Chain-agnostic: an endpoint holds whatever client its chain uses (an ``AsyncWeb3``, an
``httpx.AsyncClient``, a Solana ``AsyncClient``); the pool only decides *which* endpoint a call
goes to and what a failure costs it. Endpoints are tried in configured order (the first is the
primary), skipping those cooling down after failures and those whose head is stale, so traffic
returns to the primary as soon as it recovers.

Stale means one of: *behind* (its head trails the best endpoint's by more than
``stale_blocks``) or *frozen* (its head has not moved for ``stale_after`` seconds while
another endpoint's has). A range query also names the block it needs (``min_head``) and never
goes to an endpoint that has not reported that block: a lagging node answers ``eth_getLogs``
past its head with an empty list on some clients, and an empty list would be a skipped range.

Chain identity: with ``identify`` and ``expected`` (EVM ``eth_chainId``, TRON's genesis block
id, Solana's genesis hash, from the registry), every endpoint is asked which chain it serves
before its first use and again before its first use after a failure (a failover target, a
node that came back — perhaps rebuilt on another chain). One on another chain is refused for
good: never asked for a head or a range, logged once, flagged by a metric. A mainnet watcher
pointed at a testnet node (or the reverse) would otherwise credit transfers that never
happened on the chain the merchant is paid on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from pago.watcher import metrics
from pago.watcher.core.throttle import worth_logging

log = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")


class RpcError(Exception):
    """An endpoint failed to give a usable answer; another endpoint (or a retry) may."""


class RangeTooLarge(Exception):
    """The endpoint refuses a range this large (a provider limit or a timeout): split it.

    Not the endpoint's fault, so it does not count against the endpoint's health.
    """


class EndpointBehind(RpcError):
    """No endpoint has reported the block a query needs yet (wait for the next head)."""


class NoEndpointAvailable(RpcError):
    """Every endpoint failed this call; the caller retries later, never skips."""


class WrongChain(Exception):
    """No endpoint serves the chain the registry names (each one that answered serves another):
    the watcher cannot run. Not an ``RpcError``: retrying does not help."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: ``uniform(0, min(cap, base × 2^n))``.

    Full jitter keeps many watchers that lost one provider at once from retrying in step.
    """

    base: float = 0.25
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def same_chain(found: str, expected: str) -> bool:
    """Hex identities (TRON block ids, ``0x`` or not) compare without case; base58 (Solana's
    genesis hash) and decimal chain ids exactly."""
    if found == expected:
        return True
    a, b = found.lower().removeprefix("0x"), expected.lower().removeprefix("0x")
    return a == b and all(c in "0123456789abcdef" for c in a)


def redact_url(url: str) -> str:
    """``scheme://host:port`` only: providers put API keys in paths and query strings."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


@dataclass
class Endpoint(Generic[C]):
    client: C
    label: str
    """The URL without secrets: the name in logs and metrics."""
    index: int
    head: int | None = None
    head_moved_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    behind: bool = False
    frozen: bool = False
    verified: bool = False
    """Its chain identity was checked (and matched) since its last failure."""
    wrong_chain: str | None = None
    """The identity it reported when that was not the expected one: refused for good."""

    @property
    def stale(self) -> bool:
        return self.behind or self.frozen


@dataclass
class EndpointPool(Generic[C]):
    network: str
    endpoints: list[Endpoint[C]]
    timeout: float = 10.0
    """Seconds one call may take before it counts as a failure (or a refusal, see ``call``)."""
    backoff: Backoff = field(default_factory=Backoff)
    stale_blocks: int = 10
    stale_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    identify: Callable[[C], Awaitable[str]] | None = None
    """Which chain an endpoint serves (its chain id or genesis hash, as text)."""
    expected: str | None = None
    """The identity the registry names; None: endpoints are not checked."""
    chain_stalled: bool = field(default=False, init=False)
    """True while no endpoint's head has moved for ``stale_after`` (the chain or every node
    stopped): readiness reports it; the watcher keeps polling."""

    @classmethod
    def of(
        cls,
        network: str,
        clients: Sequence[tuple[str, C]],
        **options: object,
    ) -> EndpointPool[C]:
        """A pool over ``(url, client)`` pairs, labelled by their redacted URLs."""
        if not clients:
            raise ValueError(f"{network}: no RPC endpoint configured")
        labels: list[str] = []
        for url, _ in clients:
            label = redact_url(url)
            if label in labels:
                label = f"{label}#{labels.count(label) + 1}"
            labels.append(label)
        endpoints = [
            Endpoint(client=client, label=label, index=i)
            for i, ((_, client), label) in enumerate(zip(clients, labels, strict=True))
        ]
        return cls(network, endpoints, **options)  # type: ignore[arg-type]

    # -- chain identity ----------------------------------------------------------------------

    @property
    def _usable(self) -> list[Endpoint[C]]:
        return [ep for ep in self.endpoints if ep.wrong_chain is None]

    async def check_identity(self) -> None:
        """Check every endpoint's chain now (at start). Raises ``WrongChain`` when none serves
        the expected chain and at least one answered (all that answered serve another); an
        endpoint that did not answer is checked again before it is used."""
        await asyncio.gather(*(self._verify(ep) for ep in self._usable))
        self._raise_if_no_right_chain()

    def _raise_if_no_right_chain(self) -> None:
        if self._usable:
            return
        seen = ", ".join(f"{ep.label} serves {ep.wrong_chain}" for ep in self.endpoints)
        raise WrongChain(
            f"{self.network}: no RPC endpoint serves the configured chain ({self.expected}): {seen}"
        )

    async def _verify(self, ep: Endpoint[C]) -> bool:
        """Whether ``ep`` may be used: its identity matches (checked once per healthy streak)."""
        if ep.wrong_chain is not None:
            return False
        if ep.verified or self.identify is None or self.expected is None:
            return True
        started = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                found = await self.identify(ep.client)
        except Exception as exc:
            self._failed(ep, "chain_identity", exc, started)
            return False
        self._observe(ep, "chain_identity", "ok", started)
        if not same_chain(found, self.expected):
            ep.wrong_chain = found
            metrics.ENDPOINT_WRONG_CHAIN.labels(self.network, ep.label).set(1)
            log.error(
                "endpoint refused: it serves another chain",
                extra={"endpoint": ep.label, "serves": found, "expected": self.expected},
            )
            return False
        ep.verified = True
        metrics.ENDPOINT_WRONG_CHAIN.labels(self.network, ep.label).set(0)
        return True

    # -- heads -------------------------------------------------------------------------------

    async def refresh_heads(self, fetch_head: Callable[[C], Awaitable[int]]) -> int:
        """Ask every endpoint for its head at once; mark stale ones; return the best head.

        Endpoints cooling down after failures are asked too: a head answer is how a recovered
        endpoint shows it is back.
        """
        now = self.clock()
        checked = await asyncio.gather(*(self._verify(ep) for ep in self._usable))
        self._raise_if_no_right_chain()
        asked = [ep for ep, ok in zip(self._usable, checked, strict=True) if ok]
        results = await asyncio.gather(
            *(self._head_of(ep, fetch_head) for ep in asked), return_exceptions=True
        )
        answered = [(ep, r) for ep, r in zip(asked, results, strict=True) if isinstance(r, int)]
        if not answered:
            raise NoEndpointAvailable(f"{self.network}: no endpoint reported a head")
        for ep, head in answered:
            if ep.head is None or head > ep.head:
                ep.head_moved_at = now
            ep.head = head  # as reported: a resynced node may go back, and routing must know
        best = max(head for _, head in answered)
        frozen = {ep.index for ep, _ in answered if now - ep.head_moved_at > self.stale_after}
        self.chain_stalled = len(frozen) == len(answered)
        for ep in self._usable:
            was = ep.stale
            ep.behind = ep.head is None or best - ep.head > self.stale_blocks
            # A chain that stopped is not a node that stopped: only flag a frozen endpoint
            # while some other endpoint still moves.
            ep.frozen = ep.index in frozen and not self.chain_stalled
            metrics.ENDPOINT_STALE.labels(self.network, ep.label).set(int(ep.stale))
            if ep.stale != was:
                log.warning(
                    "endpoint %s",
                    "stale" if ep.stale else "fresh again",
                    extra={"endpoint": ep.label, "head": ep.head, "best": best},
                )
        return best

    async def _head_of(self, ep: Endpoint[C], fetch_head: Callable[[C], Awaitable[int]]) -> int:
        started = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                head = await fetch_head(ep.client)
        except Exception as exc:
            self._failed(ep, "head", exc, started)
            raise
        self._observe(ep, "head", "ok", started)
        metrics.ENDPOINT_HEAD.labels(self.network, ep.label).set(head)
        return head

    # -- calls -------------------------------------------------------------------------------

    def _candidates(self, min_head: int | None) -> list[Endpoint[C]]:
        self._raise_if_no_right_chain()
        usable = [
            ep
            for ep in self._usable
            if min_head is None or (ep.head is not None and ep.head >= min_head)
        ]
        # Fresh before stale, then out of cooldown before cooling (soonest first), then the
        # configured order: a recovered primary gets its traffic back.
        now = self.clock()

        def rank(ep: Endpoint[C]) -> tuple[bool, float, int]:
            return (ep.stale, ep.retry_at if ep.retry_at > now else 0.0, ep.index)

        return sorted(usable, key=rank)

    async def call(
        self,
        op: Callable[[C], Awaitable[T]],
        *,
        method: str,
        min_head: int | None = None,
        refuse_on_timeout: bool = False,
        rounds: int = 2,
    ) -> T:
        """Run ``op`` on the best endpoint, failing over to the others.

        ``min_head``: only endpoints that reported at least this block. ``refuse_on_timeout``:
        a timeout means "range too large" (raise ``RangeTooLarge`` so the caller splits)
        rather than "endpoint down". ``RangeTooLarge`` from ``op`` is raised at once.
        After ``rounds`` passes over every candidate, ``NoEndpointAvailable``.
        """
        last: BaseException | None = None
        for attempt in range(rounds):
            candidates = self._candidates(min_head)
            if not candidates:
                raise EndpointBehind(f"{self.network}: no endpoint has block {min_head} yet")
            for ep in candidates:
                wait = ep.retry_at - self.clock()
                if wait > 0:
                    # Every better endpoint failed; this one is cooling down. Wait it out
                    # (bounded by the cap) rather than hammer it.
                    await asyncio.sleep(min(wait, self.backoff.cap))
                if not await self._verify(ep):
                    continue
                started = self.clock()
                try:
                    async with asyncio.timeout(self.timeout):
                        result = await op(ep.client)
                except RangeTooLarge:
                    self._observe(ep, method, "refused", started)
                    raise
                except TimeoutError as exc:
                    if refuse_on_timeout:
                        self._observe(ep, method, "timeout", started)
                        raise RangeTooLarge(f"{method} timed out on {ep.label}") from exc
                    self._failed(ep, method, exc, started)
                    last = exc
                    continue
                except Exception as exc:
                    self._failed(ep, method, exc, started)
                    last = exc
                    continue
                ep.failures = 0
                ep.retry_at = 0.0
                self._observe(ep, method, "ok", started)
                return result
            if attempt + 1 < rounds:
                await asyncio.sleep(self.backoff.delay(attempt))
        raise NoEndpointAvailable(f"{self.network}: {method} failed on every endpoint: {last!r}")

    def _observe(self, ep: Endpoint[C], method: str, outcome: str, started: float) -> None:
        metrics.RPC_REQUESTS.labels(self.network, ep.label, method, outcome).inc()
        metrics.RPC_SECONDS.labels(self.network, ep.label, method).observe(self.clock() - started)

    def _failed(self, ep: Endpoint[C], method: str, exc: BaseException, started: float) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self._observe(ep, method, "timeout" if reason == "timeout" else "error", started)
        metrics.RPC_ERRORS.labels(self.network, ep.label, reason).inc()
        ep.failures += 1
        ep.verified = False  # checked again before its next use (it may come back as another)
        ep.retry_at = self.clock() + self.backoff.delay(ep.failures)
        # One line per failure would flood the log while an endpoint is down: log the first
        # failure of a streak and then every 10th.
        if worth_logging(ep.failures, 10):
            log.warning(
                "rpc call failed",
                extra={
                    "endpoint": ep.label,
                    "method": method,
                    "reason": reason,
                    "error": str(exc)[:300],
                    "failures": ep.failures,
                },
            )

    def describe(self) -> list[dict[str, object]]:
        """Each endpoint's state, for the status endpoint."""
        now = self.clock()
        return [
            {
                "endpoint": ep.label,
                "head": ep.head,
                "stale": ep.stale,
                "behind": ep.behind,
                "frozen": ep.frozen,
                "failures": ep.failures,
                "cooling_down": ep.retry_at > now,
                "wrong_chain": ep.wrong_chain,
            }
            for ep in self.endpoints
        ]
