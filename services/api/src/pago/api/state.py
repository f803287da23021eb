"""What the lifespan builds once per process and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.auth.service import Authenticator
from pago.api.idempotency import DurableStore, IdempotencyStore
from pago.api.ratelimit import RateLimiter
from pago.api.sessions.service import SessionService
from pago.api.settings import ApiSettings
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
    metrics: HealthServer | None
    """The Prometheus endpoint on ``api_metrics_port`` (None when the server process serves it
    for several workers)."""
