"""What the lifespan builds once per process and every request uses.

Each feature's service is built here once, in ``create_app``'s lifespan, and an endpoint reaches
it through the one ``State`` dependency (``state.webhook_endpoints.create(…)``). Tests that need
a service built otherwise replace it in this state; nothing builds one per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.auth.service import Authenticator
from pago.api.cards.service import CardSessionService
from pago.api.checkout_page.service import CheckoutPageService
from pago.api.idempotency import DurableStore, IdempotencyStore
from pago.api.oauth.service import OAuthService
from pago.api.payment_exceptions.service import PaymentExceptionService
from pago.api.ratelimit import RateLimiter
from pago.api.sessions.service import SessionService
from pago.api.settings import ApiSettings
from pago.api.test_helpers.service import TestHelperService
from pago.api.webhook_endpoints.service import WebhookEndpointService
from pago.common.health import HealthServer
from pago.common.networks import Registry


@dataclass(frozen=True, slots=True)
class ApiState:
    settings: ApiSettings
    registry: Registry
    engine: AsyncEngine
    redis: Redis
    broker: KafkaBroker
    transfers: DefaultPublisher
    """Publisher of ``chain.transfers`` (test helpers only; everything else uses the outbox)."""
    producer: AIOKafkaProducer
    """The outbox relay's producer (raw aiokafka, as ``OutboxRelay`` wants)."""
    authenticator: Authenticator
    limiter: RateLimiter
    idempotency: IdempotencyStore
    idempotency_records: DurableStore
    """The durable half of ``Idempotency-Key`` (Postgres)."""
    sessions: SessionService
    webhook_endpoints: WebhookEndpointService
    payment_exceptions: PaymentExceptionService
    checkout_page: CheckoutPageService
    test_helpers: TestHelperService
    oauth: OAuthService
    """Issues the card API's tokens and verifies the ones it receives."""
    metrics: HealthServer | None
    """The Prometheus endpoint on ``api_metrics_port`` (None when the server process serves it
    for several workers)."""
    cards: CardSessionService | None = None
    """Card sessions (``/api/v1/sessions``); ``None`` until providers are configured: the
    card routes answer 503."""
