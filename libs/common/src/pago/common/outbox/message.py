"""One message waiting in the outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from pago.common.events import Event


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    topic: str
    key: str
    value: bytes | None
    """``None`` is a tombstone (it deletes ``key`` from a compacted topic)."""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, topic: str, key: str, event: Event, event_type: str | None = None) -> OutboxMessage:
        headers = {"v": str(event.v), "event_type": event_type or type(event).__name__}
        return cls(topic, key, event.to_bytes(), headers)

    @classmethod
    def tombstone(cls, topic: str, key: str) -> OutboxMessage:
        return cls(topic, key, None)
