"""``Idempotency-Key``: Redis (fast path, in-flight lock) over Postgres (the durable record).

See :mod:`pago.api.idempotency.middleware` for the rules.
"""

from pago.api.idempotency.durable import DurableClaim, DurableStore, StoredReplay
from pago.api.idempotency.middleware import (
    CLAIM_STATE,
    HEADER,
    MAX_KEY_LENGTH,
    REDACT_STATE,
    REPLAYED_HEADER,
    IdempotencyMiddleware,
    IdempotencyStore,
    StoredResponse,
    durable_scope,
    fingerprint,
    record_key,
)

__all__ = [
    "CLAIM_STATE",
    "HEADER",
    "MAX_KEY_LENGTH",
    "REDACT_STATE",
    "REPLAYED_HEADER",
    "DurableClaim",
    "DurableStore",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "StoredReplay",
    "StoredResponse",
    "durable_scope",
    "fingerprint",
    "record_key",
]
