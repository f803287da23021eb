"""Screen senders before any credit: the local list first, then the provider (cached).

A sender on the sanctions list is a hit without asking anyone. Otherwise, with a provider
configured, the provider decides: retried with exponential backoff, and when it still cannot
answer the failure policy applies — ``closed`` (default) returns ``unavailable`` so the domain
holds the payment as an ``aml_unavailable`` exception; ``open`` lets it through, counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from pago.common.enums import Network
from pago.common.sessions import chain_family
from pago.matcher import metrics
from pago.matcher.aml.addresses import normalize
from pago.matcher.aml.provider import ProviderUnavailable, RiskProvider, VerdictCache
from pago.matcher.aml.sanctions import SanctionsList
from pago.matcher.domain import AmlVerdict
from pago.matcher.settings import AmlFailurePolicy

log = logging.getLogger(__name__)

Sender = tuple[Network, str]
Sleep = Callable[[float], Coroutine[Any, Any, None]]


class Screener:
    def __init__(
        self,
        sanctions: SanctionsList,
        provider: RiskProvider | None = None,
        cache: VerdictCache | None = None,
        *,
        attempts: int = 3,
        backoff: float = 0.2,
        concurrency: int = 16,
        failure_policy: AmlFailurePolicy = AmlFailurePolicy.CLOSED,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.sanctions = sanctions
        self._provider = provider
        self._cache = cache
        self._attempts = attempts
        self._backoff = backoff
        self._limit = asyncio.Semaphore(concurrency)
        self._policy = failure_policy
        self._sleep = sleep

    async def screen_many(self, senders: Iterable[Sender]) -> dict[Sender, AmlVerdict]:
        """A verdict for every distinct sender (keys as given)."""
        self.sanctions.maybe_reload()
        unique = list(dict.fromkeys(senders))
        verdicts = await asyncio.gather(*(self.screen(n, a) for n, a in unique))
        return dict(zip(unique, verdicts, strict=True))

    async def screen(self, network: Network, address: str) -> AmlVerdict:
        listed = self.sanctions.lookup(chain_family(network), address)
        if listed is not None:
            metrics.AML_SCREENINGS.labels("list", "hit").inc()
            return AmlVerdict.hit(f"sanctions_list:{listed}")
        if self._provider is None:
            metrics.AML_SCREENINGS.labels("list", "clear").inc()
            return AmlVerdict.clear()
        verdict = await self._ask_provider(self._provider, network, address)
        metrics.AML_SCREENINGS.labels("provider", verdict.outcome.value).inc()
        return verdict

    async def _ask_provider(
        self, provider: RiskProvider, network: Network, address: str
    ) -> AmlVerdict:
        if self._cache is not None:
            cached = await self._cache.get(provider.name, network, address)
            if cached is not None:
                return cached
        delay = self._backoff
        async with self._limit:
            for attempt in range(1, self._attempts + 1):
                try:
                    verdict = await provider.check(network, address)
                except ProviderUnavailable as exc:
                    log.warning(
                        "AML provider could not screen a sender",
                        extra={
                            "provider": provider.name,
                            "network": network.value,
                            "attempt": attempt,
                            "reason": str(exc),
                        },
                    )
                    if attempt < self._attempts:
                        await self._sleep(delay)
                        delay *= 2
                    continue
                if self._cache is not None:
                    await self._cache.put(provider.name, network, address, verdict)
                return verdict
        if self._policy is AmlFailurePolicy.OPEN:
            metrics.AML_UNSCREENED_CREDITS.inc()
            log.error(
                "AML provider unavailable and the failure policy is open: letting it through",
                extra={
                    "network": network.value,
                    "sender": normalize(chain_family(network), address),
                },
            )
            return AmlVerdict.clear()
        return AmlVerdict.unavailable()
