"""Build the ``ChainSource`` of a network's chain family from settings and the registry.

Add a family here when its source exists (``chains/tron.py``, ``chains/solana.py``): one
builder taking the same arguments; the core does not change.
"""

from __future__ import annotations

from collections.abc import Callable

from pago.common.enums import ChainFamily
from pago.common.errors import ConfigError
from pago.watcher.chains.base import ChainSource
from pago.watcher.core.rpc import Backoff
from pago.watcher.settings import WatcherSettings


def _evm(settings: WatcherSettings) -> ChainSource:
    from pago.watcher.chains.evm import EvmSource

    spec = settings.registry.network(settings.network).mode(settings.mode)
    return EvmSource.connect(
        settings.network,
        settings.mode,
        spec.tokens,
        _urls(settings),
        timeout=settings.rpc_timeout,
        backoff=Backoff(base=0.25, cap=settings.rpc_backoff_max),
        stale_blocks=settings.stale_blocks,
        stale_after=settings.stale_after,
    )


BUILDERS: dict[ChainFamily, Callable[[WatcherSettings], ChainSource]] = {
    ChainFamily.EVM: _evm,
}


def _urls(settings: WatcherSettings) -> tuple[str, ...]:
    urls = settings.urls()
    if not urls:
        raise ConfigError(
            f"{settings.network} {settings.mode}: no RPC endpoint; set PAGO_WATCHER_RPC_URLS "
            "or rpc_urls in the chains file"
        )
    return urls


def build_source(settings: WatcherSettings) -> ChainSource:
    family = settings.registry.network(settings.network).family
    builder = BUILDERS.get(family)
    if builder is None:
        raise ConfigError(f"no watcher for the {family} chain family yet ({settings.network})")
    return builder(settings)
