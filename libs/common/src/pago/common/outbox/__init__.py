"""Transactional outbox: events are rows written in the same transaction as the state change,
and a relay publishes them to Kafka in order per key, marking them sent only after the ack."""

from pago.common.outbox.message import OutboxMessage
from pago.common.outbox.relay import OutboxRelay
from pago.common.outbox.repository import enqueue

__all__ = ["OutboxMessage", "OutboxRelay", "enqueue"]
