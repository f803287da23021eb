"""Build the ``ChainSource`` of a network's chain family from settings and the registry.

Add a family here when its source exists (``chains/tron.py``, the ``chains/solana/`` package):
one builder taking the same arguments; the core does not change.
"""

from __future__ import annotations

from collections.abc import Callable

from pago.common.enums import ChainFamily
from pago.common.errors import ConfigError
from pago.watcher.core.rpc import Backoff
from pago.watcher.core.source import ChainSource
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
        chain_id=spec.chain_id,
        backoff=Backoff(base=0.25, cap=settings.rpc_backoff_max),
        stale_blocks=settings.stale_blocks,
        stale_after=settings.stale_after,
    )


def _tron(settings: WatcherSettings) -> ChainSource:
    from pago.watcher.chains.tron import SolidifiedFrom, TronSource

    spec = settings.registry.network(settings.network).mode(settings.mode)
    key = settings.tron_api_key
    return TronSource.connect(
        settings.network,
        settings.mode,
        spec.tokens,
        _urls(settings),
        api_key=key.get_secret_value() if key is not None else None,
        solidified_from=SolidifiedFrom(settings.tron_solidified_from),
        max_in_flight=settings.tron_max_in_flight,
        timeout=settings.rpc_timeout,
        genesis_hash=spec.genesis_hash,
        backoff=Backoff(base=0.25, cap=settings.rpc_backoff_max),
        stale_blocks=settings.stale_blocks,
        stale_after=settings.stale_after,
    )


def _solana(settings: WatcherSettings) -> ChainSource:
    from pago.watcher.chains.solana import SolanaSource

    spec = settings.registry.network(settings.network).mode(settings.mode)
    return SolanaSource.connect(
        settings.network,
        settings.mode,
        spec.tokens,
        _urls(settings),
        timeout=settings.rpc_timeout,
        budget=settings.solana_rpc_budget,
        batch_size=settings.solana_batch_size,
        concurrency=settings.solana_concurrency,
        signature_page=settings.solana_signature_page,
        # Hints answer only ranges above the finalized slot, which then carry detections only.
        balance_hints=settings.solana_balance_hints and settings.confirm_finalized,
        genesis_hash=spec.genesis_hash,
        backoff=Backoff(base=0.25, cap=settings.rpc_backoff_max),
        stale_blocks=settings.stale_blocks,
        stale_after=settings.stale_after,
    )


BUILDERS: dict[ChainFamily, Callable[[WatcherSettings], ChainSource]] = {
    ChainFamily.EVM: _evm,
    ChainFamily.TRON: _tron,
    ChainFamily.SOLANA: _solana,
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
