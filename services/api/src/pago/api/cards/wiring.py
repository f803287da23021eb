"""Build the card sessions service from ``CardSettings`` (called by ``create_app``'s lifespan).

Only the providers in ``PAGO_CARD_ENABLED_PROVIDERS`` get an adapter (CardSettings refuses an
enabled provider without its credentials); none enabled → ``None``, and the card routes
answer 503.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.cards.providers.adyen import AdyenAdapter
from pago.api.cards.providers.base import CardProviderAdapter
from pago.api.cards.providers.paypal import PayPalAdapter
from pago.api.cards.providers.stripe import StripeAdapter
from pago.api.cards.routing.health import CircuitBreaker
from pago.api.cards.service import CardConfig, CardSessionService
from pago.api.cards.settings import CardSettings
from pago.api.cards.signals import BreakerAndStats
from pago.api.cards.stats_repository import RouteStatsCache
from pago.common.enums import CardProvider


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def build_adapter(settings: CardSettings, provider: CardProvider) -> CardProviderAdapter:
    timeout = settings.create_timeout_seconds
    if provider is CardProvider.STRIPE:
        return StripeAdapter(
            api_key=_secret(settings.stripe_api_key),
            webhook_secret=_secret(settings.stripe_webhook_secret),
            base_url=settings.stripe_base_url,
            timeout=timeout,
        )
    if provider is CardProvider.ADYEN:
        return AdyenAdapter(
            base_url=settings.adyen_base_url,
            api_key=_secret(settings.adyen_api_key),
            merchant_account=str(settings.adyen_merchant_account),
            hmac_key=_secret(settings.adyen_hmac_key),
            timeout=timeout,
        )
    if provider is CardProvider.PAYPAL:
        return PayPalAdapter(
            base_url=settings.paypal_base_url,
            client_id=str(settings.paypal_client_id),
            client_secret=_secret(settings.paypal_client_secret),
            webhook_id=str(settings.paypal_webhook_id),
            timeout=timeout,
        )
    raise ValueError(f"no adapter for {provider}")  # pragma: no cover - CardProvider is closed


def build_card_service(
    settings: CardSettings, engine: AsyncEngine, redis: Redis, *, trace_engine: AsyncEngine
) -> CardSessionService | None:
    if not settings.enabled_providers:
        return None
    adapters = {p: build_adapter(settings, p) for p in settings.enabled_providers}
    signals = BreakerAndStats(
        CircuitBreaker(redis, settings.breaker),
        RouteStatsCache(
            settings.stats_cache_seconds, window=timedelta(hours=settings.stats_window_hours)
        ),
    )
    config = CardConfig(
        deadline_seconds=settings.create_deadline_seconds,
        ttl=timedelta(minutes=settings.session_ttl_minutes),
        fees=settings.fee_schedules(),
        weights=settings.weights,
        capabilities={p: settings.capabilities_for(p, a.capabilities) for p, a in adapters.items()},
    )
    return CardSessionService(engine, adapters, signals, config, trace_engine=trace_engine)
