"""Kafka plumbing: the FastStream broker and a raw aiokafka producer with the same settings.

Producers are idempotent with ``acks=all`` so a retried send never duplicates or reorders
within a partition; consumers are built by each service with a ``group_id`` and manual acks.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

PRODUCER_OPTIONS: dict[str, object] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "max_batch_size": 1 << 20,
    "request_timeout_ms": 15_000,
}


def create_broker(bootstrap_servers: str, *, client_id: str = "pago") -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers.split(","),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        request_timeout_ms=15_000,
    )


def create_producer(bootstrap_servers: str, *, client_id: str = "pago") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","), client_id=client_id, **PRODUCER_OPTIONS
    )
