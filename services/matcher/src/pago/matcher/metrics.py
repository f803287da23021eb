"""The matcher's Prometheus metrics (the shared outbox metrics live in ``pago.common.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSFERS = Counter(
    "pago_matcher_transfers_total",
    "Transfers read from chain.transfers, by stage and what became of them",
    ["stage", "result"],
)
"""``result``: applied, duplicate (a redelivery that changed nothing), unknown_address, invalid."""
INVALID_TRANSFERS = Counter(
    "pago_matcher_invalid_transfers_total",
    "Records of chain.transfers that cannot be a payment, by reason (the unreadable ones are "
    "dead-lettered: see pago_deadletter_records_total)",
    ["reason"],
)
PAYMENT_EXCEPTIONS = Counter(
    "pago_matcher_payment_exceptions_total", "Payment exceptions raised", ["kind"]
)
REVERTED_CREDITS = Counter(
    "pago_matcher_reverted_credits_total",
    "ALERT: a credited transfer was reverted by a reorg deeper than the confirmation depth",
)
SESSION_TRANSITIONS = Counter(
    "pago_matcher_session_transitions_total", "Session status changes", ["source", "to"]
)
BATCH_SECONDS = Histogram(
    "pago_matcher_batch_seconds",
    "Time to screen, apply and commit one poll of chain.transfers",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RECORDS = Histogram(
    "pago_matcher_batch_records",
    "Records in one poll of chain.transfers",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_FAILURES = Counter(
    "pago_matcher_batch_failures_total",
    "Batches rolled back and rewound for another attempt (nothing was skipped)",
)
COMMIT_FAILURES = Counter(
    "pago_matcher_offset_commit_failures_total",
    "Offset commits that failed after the database commit (the batch will be redelivered)",
)
SESSIONS_EXPIRED = Counter(
    "pago_matcher_sessions_expired_total", "Sessions expired by the scheduler"
)
EXPIRY_LAG = Histogram(
    "pago_matcher_expiry_lag_seconds",
    "now - expires_at when a session expired: how long proving the chain silent took",
    ["network", "mode"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
IGNORED_TRANSFERS = Counter(
    "pago_matcher_ignored_transfers_total",
    "Transfers recorded for audit only and kept out of every session (dust below the minimum "
    "credit, zero-value transferFrom griefing)",
    ["network", "reason"],
)
RESOLUTIONS = Counter(
    "pago_matcher_resolutions_total", "Resolution requests applied", ["action", "result"]
)
AML_SCREENINGS = Counter(
    "pago_matcher_aml_screenings_total",
    "Sender screenings by level and outcome",
    ["level", "outcome"],
)
AML_PROVIDER_ERRORS = Counter(
    "pago_matcher_aml_provider_errors_total", "Failed calls to the AML risk provider", ["reason"]
)
AML_PROVIDER_SECONDS = Histogram(
    "pago_matcher_aml_provider_seconds",
    "Latency of one call to the AML risk provider",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AML_UNSCREENED_CREDITS = Counter(
    "pago_matcher_aml_unscreened_total",
    "Transfers let through unscreened because the failure policy is open",
)
AML_LIST_ADDRESSES = Gauge(
    "pago_matcher_aml_list_addresses", "Addresses in the local sanctions list", ["family"]
)
AML_LIST_RELOADS = Counter(
    "pago_matcher_aml_list_reloads_total", "Sanctions list (re)loads", ["result"]
)
AML_HELD = Gauge(
    "pago_matcher_aml_held_transfers", "Transfers held uncredited because screening was unavailable"
)
