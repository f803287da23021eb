"""The ``checkout.sessions`` and ``card.sessions`` consumers: deliveries are stored before the
offsets move.

The loop — parse, store in one transaction, dead letters acknowledged, then commit exactly the
batch's offsets; on an error roll back, rewind what it still owns and back off, or halt when it
cannot — is the shared ``pago.common.consumer.BatchConsumer`` (its docstring says why it keeps
the offsets itself rather than FastStream's ack policies). What is the notifier's own:

1. a record that is not a session event this notifier reads (not JSON, invalid, a newer major
   schema version, an unknown ``event_type``) is set aside for the dead-letter topic: it can
   never become a webhook as it is, and holding the partition would stall every merchant's
   webhooks behind it (added fields are ignored, not refused);
2. the events are fanned out into ``webhook_deliveries`` (one event per transaction after a
   poison error, so only the event that still fails alone is dead-lettered);
3. once stored (and the letters acknowledged) it wakes the delivery worker and appends the
   events to the hosted page's live feed in Redis (best effort, see ``live``).

A crash between the database commit and the offset commit redelivers the batch; the
``(endpoint_id, event_id)`` unique constraint turns it into a no-op. So each event reaches each
endpoint's queue exactly once.

``card.sessions`` is a second ``BatchConsumer`` (``CardSessionEventHandler``) subscribed on the
same broker in its own consumer group, rather than one subscriber on both topics dispatching by
topic: a ``Subscription`` is one group reading one topic (what the AsyncAPI document declares),
each topic keeps its own typed parse and fan-out with no union to dispatch on, and a card batch
that keeps failing (its backoff, its one-event-at-a-time isolation after a poison error) never
holds the checkout webhooks back, nor they it. Card events have no hosted-page live feed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, get_args

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pago.common import consumer as shared
from pago.common.channels import NOTIFIER_CARD_SESSIONS, NOTIFIER_SESSIONS
from pago.common.consumer import (
    FIRST_BACKOFF,
    Applied,
    BatchConsumer,
    ConsumerMetrics,
    ConsumerPort,
    ServiceHandler,
    port_for,
)
from pago.common.deadletter import DeadLetterSink, Reason, Rejected, Versioned, decode, header
from pago.common.events import SESSION_EVENT_ADAPTER, AnySessionEvent, CardSessionEvent
from pago.notifier import metrics
from pago.notifier.live import LiveFeed
from pago.notifier.service import FanOut, fan_out, fan_out_cards

E = TypeVar("E", bound=Versioned)
"""An event this notifier reads (it carries its schema version)."""
FanOutFn = Callable[[AsyncConnection, Sequence[AnySessionEvent]], Awaitable[FanOut]]
CardFanOutFn = Callable[[AsyncConnection, Sequence[CardSessionEvent]], Awaitable[FanOut]]
EVENT_TYPES = frozenset(
    name.encode()
    for t in get_args(AnySessionEvent)
    for name in (t.__name__, t.model_fields["type"].default)
)
"""The ``event_type`` headers of ``checkout.sessions`` this notifier reads, spelled as the outbox
writes them (the class name) or as the event's ``type``; a record without the header is read."""

CARD_EVENT_TYPES = frozenset(
    name.encode()
    for name in (
        CardSessionEvent.__name__,
        *get_args(CardSessionEvent.model_fields["type"].annotation),
    )
)
"""The ``event_type`` headers of ``card.sessions`` this notifier reads: the class name (what the
outbox writes by default) or one of the event's ``type`` values; a record without it is read."""

METRICS = ConsumerMetrics(
    batch_failures=metrics.BATCH_FAILURES, commit_failures=metrics.COMMIT_FAILURES
)


def _parser(
    event_types: frozenset[bytes], validate: Callable[[bytes], E]
) -> Callable[[ConsumerRecord[Any, Any]], E]:
    def parse(record: ConsumerRecord[Any, Any]) -> E:
        event_type = header(record, "event_type")
        if event_type is not None and event_type not in event_types:
            raise Rejected(Reason.UNKNOWN_EVENT_TYPE, repr(event_type))
        return decode(record, validate)

    return parse


parse = _parser(EVENT_TYPES, SESSION_EVENT_ADAPTER.validate_json)
parse_card = _parser(CARD_EVENT_TYPES, CardSessionEvent.model_validate_json)


class _FanOutHandler(ServiceHandler[E, FanOut]):
    """Parse, fan out into ``webhook_deliveries`` in one transaction, count, wake the worker."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        parse: Callable[[ConsumerRecord[Any, Any]], E],
        fan_out: Callable[[AsyncConnection, Sequence[E]], Awaitable[FanOut]],
        events: Counter,
        on_stored: Callable[[], None],
        deadletters: DeadLetterSink,
        max_backoff: float,
        first_backoff: float,
        port: Callable[[object], ConsumerPort],
        on_halt: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._fan_out = fan_out
        self._events = events
        self._on_stored = on_stored
        self.consumer = BatchConsumer(
            parse=parse,
            apply=self._store,
            done=self._done,
            deadletters=deadletters,
            metrics=METRICS,
            max_backoff=max_backoff,
            first_backoff=first_backoff,
            port=port,
            on_halt=on_halt,
        )

    async def _store(self, events: Sequence[E]) -> FanOut:
        async with self._engine.begin() as conn:
            return await self._fan_out(conn, events)

    async def _done(self, applied: Applied[E, FanOut]) -> None:
        stored = sum(result.events for result in applied.results)
        deliveries = sum(result.deliveries for result in applied.results)
        self._events.labels("webhook").inc(stored)
        self._events.labels("ignored").inc(len(applied.events) - stored)
        if deliveries:
            metrics.DELIVERIES_CREATED.inc(deliveries)
            self._on_stored()


class SessionEventHandler(_FanOutHandler[AnySessionEvent]):
    """``checkout.sessions``: webhooks, and the hosted page's live feed."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_stored: Callable[[], None],
        deadletters: DeadLetterSink,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        port: Callable[[object], ConsumerPort] = port_for,
        fan_out: FanOutFn = fan_out,
        live: LiveFeed | None = None,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            engine,
            parse=parse,
            fan_out=fan_out,
            events=metrics.EVENTS,
            on_stored=on_stored,
            deadletters=deadletters,
            max_backoff=max_backoff,
            first_backoff=first_backoff,
            port=port,
            on_halt=on_halt,
        )
        self._live = live

    async def _done(self, applied: Applied[AnySessionEvent, FanOut]) -> None:
        await super()._done(applied)
        if self._live is not None:
            await self._live.publish(applied.events)  # best effort; never holds offsets back


class CardSessionEventHandler(_FanOutHandler[CardSessionEvent]):
    """``card.sessions``: webhooks only (card sessions have no hosted page of Pago's)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_stored: Callable[[], None],
        deadletters: DeadLetterSink,
        max_backoff: float = 30.0,
        first_backoff: float = FIRST_BACKOFF,
        port: Callable[[object], ConsumerPort] = port_for,
        fan_out: CardFanOutFn = fan_out_cards,
        on_halt: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            engine,
            parse=parse_card,
            fan_out=fan_out,
            events=metrics.CARD_EVENTS,
            on_stored=on_stored,
            deadletters=deadletters,
            max_backoff=max_backoff,
            first_backoff=first_backoff,
            port=port,
            on_halt=on_halt,
        )


def build_broker(
    bootstrap_servers: str,
    handler: SessionEventHandler,
    *,
    cards: CardSessionEventHandler | None = None,
    card_group_id: str | None = None,
    group_id: str,
    batch_size: int,
    batch_timeout_ms: int,
    graceful_timeout: float,
    fetch_wait_ms: int,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
) -> KafkaBroker:
    """The FastStream broker with the notifier's subscribers: ``checkout.sessions`` in
    ``group_id``, and ``card.sessions`` in ``card_group_id`` when ``cards`` is given."""
    broker = shared.build_broker(
        bootstrap_servers,
        handler.consumer,
        NOTIFIER_SESSIONS,
        client_id="pago-notifier",
        batch_size=batch_size,
        batch_timeout_ms=batch_timeout_ms,
        graceful_timeout=graceful_timeout,
        fetch_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        group_id=group_id,
    )
    if cards is not None:
        shared.subscribe(
            broker,
            cards.consumer,
            NOTIFIER_CARD_SESSIONS,
            batch_size=batch_size,
            batch_timeout_ms=batch_timeout_ms,
            fetch_wait_ms=fetch_wait_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            group_id=card_group_id,
        )
    return broker
