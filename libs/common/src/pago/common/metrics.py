"""Prometheus metrics shared by the services; each service adds its own beside these."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

OUTBOX_PUBLISHED = Counter(
    "pago_outbox_published_total", "Outbox rows published to Kafka and marked sent", ["topic"]
)
OUTBOX_BACKLOG = Gauge("pago_outbox_backlog", "Outbox rows not yet sent (sampled by the relay)")
OUTBOX_BATCH_SECONDS = Histogram(
    "pago_outbox_batch_seconds",
    "Time to publish one relay batch and mark it sent",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_ERRORS = Counter("pago_outbox_errors_total", "Relay batches that failed and will retry")


def render_latest() -> tuple[bytes, str]:
    """The text exposition of every registered metric and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
