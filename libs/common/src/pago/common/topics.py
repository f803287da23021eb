"""Kafka topics: names, keys and the shape each is created with."""

from dataclasses import dataclass

CHECKOUT_SESSIONS = "checkout.sessions"
CHAIN_WATCHLIST = "chain.watchlist"
CHAIN_TRANSFERS = "chain.transfers"
CHAIN_CURSORS = "chain.cursors"


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
)


def watchlist_key(network: str, mode: str, address: str) -> str:
    return f"{network}:{mode}:{address}"


def transfer_key(network: str, address: str) -> str:
    return f"{network}:{address}"


def cursor_key(network: str, mode: str) -> str:
    return f"{network}:{mode}"
