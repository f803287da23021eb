"""Kafka topics: names, keys and the shape each is created with."""

from dataclasses import dataclass

CHECKOUT_SESSIONS = "checkout.sessions"
CHAIN_WATCHLIST = "chain.watchlist"
CHAIN_TRANSFERS = "chain.transfers"
CHAIN_CURSORS = "chain.cursors"
CARD_SESSIONS = "card.sessions"
"""Card checkout sessions' state changes (``CardSessionEvent``), for the notifier."""
CARD_PROVIDER_EVENTS = "card.provider_events"
"""Every verified, deduplicated provider webhook (``CardProviderEventReceived``), as received."""
DEADLETTER = "pago.deadletter"
"""Records a consumer could not process, with why (``pago.common.deadletter``): one topic for
every consumer, one partition so that an offset names a dead letter for the replay command."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool
    retention_ms: int
    """-1 keeps forever (compacted topics hold the latest value per key)."""


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(CHECKOUT_SESSIONS, partitions=12, compacted=False, retention_ms=7 * 86_400_000),
    TopicSpec(CHAIN_WATCHLIST, partitions=12, compacted=True, retention_ms=-1),
    TopicSpec(CHAIN_TRANSFERS, partitions=12, compacted=False, retention_ms=14 * 86_400_000),
    TopicSpec(CHAIN_CURSORS, partitions=1, compacted=True, retention_ms=-1),
    TopicSpec(CARD_SESSIONS, partitions=12, compacted=False, retention_ms=7 * 86_400_000),
    # 14 days, like chain.transfers: the raw provider notifications are the audit trail a
    # reconciliation replays from, so they outlive the session events they caused.
    TopicSpec(CARD_PROVIDER_EVENTS, partitions=12, compacted=False, retention_ms=14 * 86_400_000),
    # 30 days: longer than any source topic keeps the original, so nothing ages out of the
    # dead-letter topic before the record it stands for.
    TopicSpec(DEADLETTER, partitions=1, compacted=False, retention_ms=30 * 86_400_000),
)


def watchlist_key(network: str, mode: str, address: str) -> str:
    return f"{network}:{mode}:{address}"


def transfer_key(network: str, address: str) -> str:
    return f"{network}:{address}"


def cursor_key(network: str, mode: str) -> str:
    return f"{network}:{mode}"
