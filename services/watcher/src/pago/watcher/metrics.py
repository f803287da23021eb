"""The watcher's Prometheus metrics. Every series carries ``network`` (and ``mode`` where one
process's numbers are meant), so one dashboard serves every watcher deployment."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BLOCKS_SCANNED = Counter(
    "pago_watcher_blocks_scanned_total",
    "Blocks whose transfers were published, by stage (confirmed: behind the cursor)",
    ["network", "mode", "stage"],
)
TRANSFERS_PUBLISHED = Counter(
    "pago_watcher_transfers_published_total",
    "TransferObserved events the broker acknowledged, by stage",
    ["network", "mode", "stage"],
)
HEAD = Gauge("pago_watcher_head_block", "Latest block of the best endpoint", ["network", "mode"])
CURSOR = Gauge(
    "pago_watcher_cursor_block",
    "Last block whose confirmed transfers were all acknowledged",
    ["network", "mode"],
)
LAG = Gauge(
    "pago_watcher_lag_blocks",
    "Blocks between the head and the cursor (includes the confirmation depth)",
    ["network", "mode"],
)
CONFIRM_LAG = Gauge(
    "pago_watcher_confirm_lag_blocks",
    "Blocks between the confirmable tip (head − confirmations) and the cursor: 0 when caught up",
    ["network", "mode"],
)
WATCH_SET_SIZE = Gauge(
    "pago_watcher_watch_set_size", "Addresses being watched", ["network", "mode"]
)
WATCH_SET_BYTES = Gauge(
    "pago_watcher_watch_set_bytes", "Memory held by the watch set's table", ["network", "mode"]
)
WATCHLIST_INVALID = Counter(
    "pago_watcher_watchlist_invalid_total",
    "chain.watchlist records that could not be used (logged with their offset)",
    ["network", "mode", "reason"],
)
LEADER = Gauge(
    "pago_watcher_leader", "1 while this replica holds the lease and scans", ["network", "mode"]
)
LEADERSHIP_CHANGES = Counter(
    "pago_watcher_leadership_changes_total",
    "Leases acquired or lost by this replica",
    ["network", "mode", "event"],
)
REORGS = Counter(
    "pago_watcher_reorgs_total", "Reorgs noticed (parent-hash mismatch)", ["network", "mode"]
)
REORG_DEPTH = Histogram(
    "pago_watcher_reorg_depth_blocks",
    "Depth of each reorg noticed (blocks rewound)",
    ["network", "mode"],
    buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200),
)
RANGE_SIZE = Gauge(
    "pago_watcher_range_blocks", "Current adaptive range size of confirmed scans", ["network"]
)
RANGE_REFUSALS = Counter(
    "pago_watcher_range_refusals_total",
    "Range queries refused as too large (split and retried)",
    ["network"],
)
RANGE_RETRIES = Counter(
    "pago_watcher_range_retries_total",
    "Range queries retried because no endpoint answered (nothing is skipped)",
    ["network"],
)
PUBLISH_FAILURES = Counter(
    "pago_watcher_publish_failures_total",
    "Publishes that failed and were retried before the cursor moved",
    ["network", "mode"],
)
CURSOR_COMMITS = Counter(
    "pago_watcher_cursor_commits_total", "CursorCommitted records written", ["network", "mode"]
)
BACKFILLED_ADDRESSES = Counter(
    "pago_watcher_backfilled_addresses_total",
    "Addresses that arrived after the scan had passed blocks, and were looked up over them",
    ["network", "mode"],
)
RPC_REQUESTS = Counter(
    "pago_watcher_rpc_requests_total",
    "RPC calls by endpoint, method and outcome (ok, error, timeout, refused)",
    ["network", "endpoint", "method", "outcome"],
)
RPC_ERRORS = Counter(
    "pago_watcher_rpc_errors_total",
    "RPC failures by endpoint and reason (the endpoint is backed off and another one tried)",
    ["network", "endpoint", "reason"],
)
RPC_SECONDS = Histogram(
    "pago_watcher_rpc_seconds",
    "Latency of one RPC call (a JSON-RPC batch counts once)",
    ["network", "endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ENDPOINT_HEAD = Gauge(
    "pago_watcher_endpoint_head_block",
    "Latest block each endpoint reports",
    ["network", "endpoint"],
)
ENDPOINT_STALE = Gauge(
    "pago_watcher_endpoint_stale",
    "1 while an endpoint is avoided: behind the best head, or its head stopped moving",
    ["network", "endpoint"],
)
PROGRESS_MARKERS = Counter(
    "pago_watcher_progress_markers_total",
    "ChainScanned markers the broker acknowledged (one per chain.transfers partition a round)",
    ["network", "mode"],
)
PROGRESS_BLOCK = Gauge(
    "pago_watcher_progress_block",
    "Block of the newest ChainScanned round written (the matcher may expire up to its time)",
    ["network", "mode"],
)
BACKFILL_FROM = Gauge(
    "pago_watcher_backfill_from_block",
    "First block of the newest late-address back-fill (the block at the session's creation)",
    ["network", "mode"],
)
ENDPOINT_WRONG_CHAIN = Gauge(
    "pago_watcher_endpoint_wrong_chain",
    "1 while an endpoint is refused because it serves another chain (chain id or genesis hash)",
    ["network", "endpoint"],
)
