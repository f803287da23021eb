"""Dead letters: a record a consumer cannot process goes to ``pago.deadletter``, never nowhere.

Every consumer (matcher, notifier, the watcher's watch-list reader) decodes its records with
``decode``, which refuses — with a ``Rejected`` naming the reason — a record that is not JSON
(``undecodable``), that does not validate (``invalid``), whose ``v`` header or field is a newer
major version than this code reads (``unsupported_version``), or whose ``event_type`` header the
consumer does not handle (``unknown_event_type``). A record whose handling keeps raising an error
the record itself causes (``is_poison``: a constraint or data error, a ``ValueError`` …) after
``apply_isolated`` retried it alone is a ``poison`` letter. Anything else — Postgres or Kafka
unreachable, a timeout, a deadlock — is transient: the consumer rewinds and retries, it never
dead-letters.

``DeadLetterWriter.send`` copies the original key, value and headers to ``pago.deadletter`` and
adds ``pago-dlq-*`` headers (original topic, partition, offset, timestamp, reason, detail,
consumer, time). It returns only once the broker acknowledged every letter (``acks=all``), so a
consumer commits its offsets after it and a crash in between re-sends the letter (the replay
command collapses such duplicates). ``pago_deadletter_records_total`` counts letters: alert on
any increase. ``python -m pago.common.deadletter`` (``pago-dlq``) lists, shows and replays them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import Counter
from pydantic import ValidationError

from pago.common.events import SCHEMA_VERSION
from pago.common.kafka import create_producer
from pago.common.topics import DEADLETTER

log = logging.getLogger(__name__)

DEADLETTERED = Counter(
    "pago_deadletter_records_total",
    "ALERT: records a consumer could not process, written to pago.deadletter (replay them with "
    "pago-dlq once the cause is fixed)",
    ["topic", "consumer", "reason"],
)

H_PREFIX = "pago-dlq-"
H_TOPIC = "pago-dlq-topic"
H_PARTITION = "pago-dlq-partition"
H_OFFSET = "pago-dlq-offset"
H_TIMESTAMP = "pago-dlq-timestamp"
"""The original record's timestamp (ms since the epoch)."""
H_REASON = "pago-dlq-reason"
H_DETAIL = "pago-dlq-detail"
H_CONSUMER = "pago-dlq-consumer"
H_AT = "pago-dlq-at"
"""When the consumer dead-lettered it (ms since the epoch)."""
POISON_SQLSTATE_CLASSES = frozenset({"22", "23"})
"""Data exception and integrity constraint violation: the row is wrong, not the server."""
DETAIL_MAX = 1000
"""Characters of the error kept in ``pago-dlq-detail``."""


class Reason(StrEnum):
    UNDECODABLE = "undecodable"
    """Not UTF-8 JSON (or no value at all where one is required)."""
    INVALID = "invalid"
    """JSON that does not validate as the event the topic carries."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``v`` (header or field) is a newer major version than this consumer reads."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    """An ``event_type`` header this consumer does not handle."""
    POISON = "poison"
    """Valid, but handling it alone kept raising an error the record causes."""


class Rejected(Exception):
    """A record this consumer cannot process; it goes to the dead-letter topic."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:DETAIL_MAX]


class Versioned(Protocol):
    @property
    def v(self) -> int: ...


E = TypeVar("E", bound=Versioned)
R = TypeVar("R")


def header(record: ConsumerRecord[Any, Any], name: str) -> bytes | None:
    """The last value of header ``name`` (``None`` when absent)."""
    found = None
    for key, value in record.headers or ():
        if key == name:
            found = value
    return found


def _header_version(record: ConsumerRecord[Any, Any]) -> int | None:
    raw = header(record, "v")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Rejected(Reason.INVALID, f"header v is not an integer: {raw!r}") from None


def _too_new(v: int, supported: int) -> Rejected:
    return Rejected(
        Reason.UNSUPPORTED_VERSION, f"schema version {v}; this consumer reads up to {supported}"
    )


def decode(
    record: ConsumerRecord[Any, Any],
    parse: Callable[[bytes], E],
    *,
    supported: int = SCHEMA_VERSION,
) -> E:
    """Parse ``record.value`` with ``parse`` or raise ``Rejected`` with the reason.

    Unknown fields are ignored by the event models (an additive change is read as before); a
    version above ``supported`` is refused whatever else the record says, so a consumer never
    guesses at a record written for an incompatible schema.
    """
    header_v = _header_version(record)
    if header_v is not None and header_v > supported:
        raise _too_new(header_v, supported)
    value = record.value
    if value is None:
        raise Rejected(Reason.UNDECODABLE, "no value (a tombstone where an event is required)")
    try:
        event = parse(value)
    except ValidationError as exc:
        raise _diagnose(value, exc, supported) from None
    if event.v > supported:
        raise _too_new(event.v, supported)
    return event


def _diagnose(value: bytes, exc: ValidationError, supported: int) -> Rejected:
    """Why a value did not validate (only on the failure path: the good path parses once)."""
    try:
        body = json.loads(value)
    except ValueError as not_json:
        return Rejected(Reason.UNDECODABLE, str(not_json))
    if isinstance(body, dict):
        v = body.get("v")
        if isinstance(v, int) and not isinstance(v, bool) and v > supported:
            return _too_new(v, supported)
    errors = exc.errors(include_url=False, include_input=False)[:3]
    return Rejected(Reason.INVALID, json.dumps(errors, default=str))


def _sqlalchemy_errors() -> Any:
    """``sqlalchemy.exc`` if this process uses SQLAlchemy (the watcher does not: an error can
    only be one of its classes once it is imported, so it is never imported here)."""
    return sys.modules.get("sqlalchemy.exc")


def _sqlstate(exc: Any) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def describe(exc: BaseException) -> str:
    """The error in one line, without the SQL statement and its parameters."""
    sa_exc = _sqlalchemy_errors()
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        return f"{type(exc).__name__} (SQLSTATE {_sqlstate(exc)}): {exc.orig}"
    return f"{type(exc).__name__}: {exc}"


def is_poison(exc: BaseException) -> bool:
    """Whether ``exc`` is caused by the record being handled rather than by its surroundings.

    Poison: a Postgres data or constraint error (SQLSTATE classes 22 and 23), and the Python
    errors bad data raises (``ValueError`` — pydantic's included —, ``TypeError``,
    ``LookupError``, ``ArithmeticError``). Everything else — a lost or refused connection, a
    timeout, a deadlock or serialization failure, a Kafka or Redis error, an unknown error — is
    transient: retrying the same record may succeed, so it must never be dead-lettered.
    """
    sa_exc = _sqlalchemy_errors()
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return False
        # asyncpg's adapter reports most server errors as a bare DBAPIError: go by SQLSTATE.
        sqlstate = _sqlstate(exc)
        if sqlstate is not None:
            return sqlstate[:2] in POISON_SQLSTATE_CLASSES
        return isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError)
    if sa_exc is not None and isinstance(exc, sa_exc.StatementError):
        return exc.orig is not None and is_poison(exc.orig)
    if isinstance(exc, OSError):  # connections, timeouts
        return False
    return isinstance(exc, ValueError | TypeError | LookupError | ArithmeticError)


async def apply_isolated(
    items: Sequence[R],
    apply_one: Callable[[R], Awaitable[None]],
    *,
    attempts: int = 3,
    backoff: float = 0.05,
) -> list[tuple[R, BaseException]]:
    """Apply each item on its own (in order); return those that kept raising a poison error.

    Used after a batch failed with a poison error, to find the record that caused it while the
    others go through. A transient error propagates at once (the caller rewinds and retries
    the whole batch later); a poison error is retried ``attempts`` times before it counts.
    """
    poisoned: list[tuple[R, BaseException]] = []
    for item in items:
        for attempt in range(1, attempts + 1):
            try:
                await apply_one(item)
                break
            except Exception as exc:
                if not is_poison(exc):
                    raise
                if attempt == attempts:
                    poisoned.append((item, exc))
                else:
                    await asyncio.sleep(backoff * attempt)
    return poisoned


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: ConsumerRecord[Any, Any]
    reason: Reason
    detail: str

    @classmethod
    def of(cls, record: ConsumerRecord[Any, Any], rejected: Rejected) -> DeadLetter:
        return cls(record, rejected.reason, rejected.detail)

    @classmethod
    def poison(cls, record: ConsumerRecord[Any, Any], exc: BaseException) -> DeadLetter:
        return cls(record, Reason.POISON, describe(exc)[:DETAIL_MAX])

    def headers(self, consumer: str, now_ms: int) -> list[tuple[str, bytes]]:
        r = self.record
        original = [(k, v) for k, v in (r.headers or ()) if not k.startswith(H_PREFIX)]
        return [
            *original,
            (H_TOPIC, r.topic.encode()),
            (H_PARTITION, str(r.partition).encode()),
            (H_OFFSET, str(r.offset).encode()),
            (H_TIMESTAMP, str(r.timestamp).encode()),
            (H_REASON, self.reason.value.encode()),
            (H_DETAIL, self.detail.encode()),
            (H_CONSUMER, consumer.encode()),
            (H_AT, str(now_ms).encode()),
        ]


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Return once every letter is durably stored; raise otherwise (the caller retries)."""
        ...


class DeadLetterWriter:
    """Writes dead letters of one consumer (``consumer``: its group or name) to Kafka."""

    def __init__(
        self, producer: AIOKafkaProducer, consumer: str, *, topic: str = DEADLETTER
    ) -> None:
        self._producer = producer
        self.consumer = consumer
        self.topic = topic

    @classmethod
    def create(cls, bootstrap_servers: str, consumer: str) -> DeadLetterWriter:
        return cls(create_producer(bootstrap_servers, client_id=f"{consumer}-dlq"), consumer)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        now_ms = int(time.time() * 1000)
        acks = [
            await self._producer.send(
                self.topic,
                value=letter.record.value,
                key=letter.record.key,
                headers=letter.headers(self.consumer, now_ms),
            )
            for letter in letters
        ]
        await asyncio.gather(*acks)
        for letter in letters:
            DEADLETTERED.labels(letter.record.topic, self.consumer, letter.reason.value).inc()
            log.error(
                "dead-lettered a record",
                extra={
                    "topic": letter.record.topic,
                    "partition": letter.record.partition,
                    "offset": letter.record.offset,
                    "reason": letter.reason.value,
                    "detail": letter.detail,
                    "consumer": self.consumer,
                },
            )


def letters_of(
    pairs: Iterable[tuple[ConsumerRecord[Any, Any], BaseException]],
) -> list[DeadLetter]:
    return [DeadLetter.poison(record, exc) for record, exc in pairs]
