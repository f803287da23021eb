"""The notifier's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "pago_notifier_events_total",
    "checkout.sessions records read, by what became of them",
    ["result"],
)
"""``result``: webhook (maps to a webhook type), ignored (no webhook), invalid (dead-lettered:
see ``pago_deadletter_records_total``)."""
CARD_EVENTS = Counter(
    "pago_notifier_card_events_total",
    "card.sessions records read, by what became of them",
    ["result"],
)
"""``result``: webhook (a card session webhook type), ignored (not a change of status)."""
DELIVERIES_CREATED = Counter(
    "pago_notifier_deliveries_created_total", "Deliveries queued by fan-out"
)
ATTEMPTS = Counter(
    "pago_notifier_attempts_total",
    "Webhook requests made, by outcome",
    ["outcome"],
)
"""``outcome``: succeeded, retry, failed (schedule exhausted), gone (410), refused (SSRF guard),
timeout, error (connection or protocol)."""
ATTEMPT_SECONDS = Histogram(
    "pago_notifier_attempt_seconds",
    "Duration of one webhook request, connect to response head",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_DELAY_SECONDS = Histogram(
    "pago_notifier_delivery_delay_seconds",
    "From queueing a delivery to the receiver's 2xx (first-attempt successes only)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("pago_notifier_in_flight", "Webhook requests in flight in this process")
DUE_BACKLOG = Gauge("pago_notifier_due_backlog", "Pending deliveries already due (sampled)")
ENDPOINTS_DISABLED = Counter(
    "pago_notifier_endpoints_disabled_total", "Endpoints disabled because they answered 410"
)
STALE_OUTCOMES = Counter(
    "pago_notifier_stale_outcomes_total",
    "Attempt results not written because the delivery changed hands meanwhile (lease lapsed "
    "or manual redelivery)",
)
BATCH_FAILURES = Counter(
    "pago_notifier_batch_failures_total",
    "Consumer batches rolled back and rewound for another attempt (nothing was skipped)",
)
COMMIT_FAILURES = Counter(
    "pago_notifier_offset_commit_failures_total",
    "Offset commits that failed after the deliveries were stored (the batch comes back)",
)
WORKER_ERRORS = Counter(
    "pago_notifier_worker_errors_total", "Claim or record transactions that failed and retried"
)
LIVE_FEED_EVENTS = Counter(
    "pago_notifier_live_feed_events_total", "Session events appended to the Redis live feed"
)
LIVE_FEED_ERRORS = Counter(
    "pago_notifier_live_feed_errors_total",
    "Batches not appended to the live feed (Redis unreachable); the hosted page catches up "
    "from Postgres",
)
