"""Who writes and who reads each topic, with what payload: the event contract, declared once.

The services build their FastStream subscribers (``pago.common.consumer.build_broker``) and
publishers from these declarations, and ``pago.common.asyncapi`` builds the AsyncAPI document
from the same ones, so the document cannot drift from what runs. Records written by the outbox
relay, the watchers' producers and the dead-letter writer go through aiokafka directly (for
``acks=all`` batching and explicit partitions); they are declared here all the same.

Every record carries the headers ``v`` (the event's major schema version) and ``event_type``
(the event's class name); keys are the strings of ``pago.common.topics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pago.common.events import (
    CardProviderEventReceived,
    CardSessionEvent,
    ChainScanned,
    CursorCommitted,
    SessionEvent,
    TransferObserved,
    WatchAddress,
)
from pago.common.topics import (
    CARD_PROVIDER_EVENTS,
    CARD_SESSIONS,
    CHAIN_CURSORS,
    CHAIN_TRANSFERS,
    CHAIN_WATCHLIST,
    CHECKOUT_SESSIONS,
    DEADLETTER,
)

Transfers = TransferObserved | ChainScanned
"""``chain.transfers``: ``event_type`` ``TransferObserved`` (or none, an older watcher) or
``ChainScanned``."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One consumer group reading one topic."""

    topic: str
    group_id: str | None
    """None: read from the start on every run, without a group or committed offsets."""
    reader: str
    payload: Any
    description: str

    @property
    def title(self) -> str:
        return f"{self.topic}:read-by-{self.reader}"


@dataclass(frozen=True, slots=True)
class Publication:
    """One service writing one topic."""

    topic: str
    writer: str
    payload: Any
    description: str

    @property
    def title(self) -> str:
        return f"{self.topic}:written-by-{self.writer}"


_SESSIONS_NOTE = (
    " Key: the session id. Value: one of `SessionCreated`, `SessionUpdated`, "
    "`SessionPaymentDetected`, `SessionPaymentReverted`, `SessionResolved`, discriminated by "
    "`type`, each with a stable `event_id` and the full session snapshot. Written from the "
    "transactional outbox only, after the change committed; at-least-once, so deduplicate by "
    "`event_id`."
)
_CARD_SESSIONS_NOTE = (
    " Key: the card session's id (`sessionId`). Value: `CardSessionEvent`, `type` one of "
    "`card_session.created`, `.completed`, `.failed`, `.expired`, `.cancelled`, with a stable "
    "`event_id` and the card session snapshot (amounts in the currency's minor units beside its "
    "exponent). Written from the transactional outbox only, in the transaction that moved the "
    "session; at-least-once, so deduplicate by `event_id`."
)
_DEADLETTER_NOTE = (
    " Key and value: the original record's, unchanged (whatever bytes could not be processed);"
    " headers: the original ones plus `pago-dlq-topic`, `-partition`, `-offset`, `-timestamp`,"
    " `-reason`, `-detail`, `-consumer`, `-at`. One partition, 30 days."
)

MATCHER_TRANSFERS = Subscription(
    CHAIN_TRANSFERS,
    group_id="pago-matcher",
    reader="pago-matcher",
    payload=Transfers,
    description="Observed token transfers and scan markers, applied to checkout sessions "
    "exactly once (AML-screened; a marker proves a partition silent up to a block).",
)
NOTIFIER_SESSIONS = Subscription(
    CHECKOUT_SESSIONS,
    group_id="pago-notifier",
    reader="pago-notifier",
    payload=SessionEvent,
    description="Session events, fanned out into signed webhook deliveries and the hosted "
    "page's live feed." + _SESSIONS_NOTE,
)
NOTIFIER_CARD_SESSIONS = Subscription(
    CARD_SESSIONS,
    group_id="pago-notifier-cards",
    reader="pago-notifier",
    payload=CardSessionEvent,
    description="Card session events, fanned out into signed webhook deliveries "
    "(`card_session.completed`, `.failed`, `.expired`; `.created` and `.cancelled` only to "
    "endpoints that list them). Its own consumer group, beside `checkout.sessions`' one."
    + _CARD_SESSIONS_NOTE,
)
WATCHER_WATCHLIST = Subscription(
    CHAIN_WATCHLIST,
    group_id=None,
    reader="pago-watcher",
    payload=WatchAddress,
    description="Read from the start by every watcher (no committed offsets) to build its "
    "watch set. Compacted; key `{network}:{mode}:{address}`; a tombstone (null value) stops "
    "watching.",
)
WATCHER_CURSORS = Subscription(
    CHAIN_CURSORS,
    group_id=None,
    reader="pago-watcher",
    payload=CursorCommitted,
    description="Read from the start by a watcher at start (no committed offsets) to resume "
    "from its last fully published block; the newest record of the highest `pago-fence` "
    "term wins.",
)
DLQ_REPLAY = Subscription(
    DEADLETTER,
    group_id=None,
    reader="pago-dlq",
    payload=Any,
    description="Listed, shown and replayed to their original topic and partition by "
    "`pago-dlq` (no committed offsets)." + _DEADLETTER_NOTE,
)

SUBSCRIPTIONS: tuple[Subscription, ...] = (
    MATCHER_TRANSFERS,
    NOTIFIER_SESSIONS,
    NOTIFIER_CARD_SESSIONS,
    WATCHER_WATCHLIST,
    WATCHER_CURSORS,
    DLQ_REPLAY,
)

API_SESSIONS = Publication(
    CHECKOUT_SESSIONS,
    writer="pago-api",
    payload=SessionEvent,
    description="`session.created` when a session is made, `session.updated` when a merchant "
    "expires one." + _SESSIONS_NOTE,
)
MATCHER_SESSIONS = Publication(
    CHECKOUT_SESSIONS,
    writer="pago-matcher",
    payload=SessionEvent,
    description="Payments detected, credited and reverted, status changes (Paid, Overpaid, "
    "Underpaid, Expired, Blocked), resolutions applied." + _SESSIONS_NOTE,
)
API_WATCHLIST = Publication(
    CHAIN_WATCHLIST,
    writer="pago-api",
    payload=WatchAddress,
    description="A deposit address to watch until `watch_until`, from the outbox when its "
    "session is created. Compacted; key `{network}:{mode}:{address}`; a tombstone (null "
    "value) stops watching.",
)
MATCHER_WATCHLIST = Publication(
    CHAIN_WATCHLIST,
    writer="pago-matcher",
    payload=WatchAddress,
    description="The same address again with a later `watch_until` when an Underpaid payment "
    "extends its session (the newest record per key wins), from the outbox.",
)
WATCHER_TRANSFERS = Publication(
    CHAIN_TRANSFERS,
    writer="pago-watcher",
    payload=Transfers,
    description="Token transfers to watched addresses (stage detected, confirmed or "
    "reverted; key `{network}:{address}`, so one address keeps one partition and its order), "
    "and after the broker acked every transfer up to a block, one `ChainScanned` to every "
    "partition (key `{network}:{mode}`, explicit partition).",
)
API_TRANSFERS = Publication(
    CHAIN_TRANSFERS,
    writer="pago-api",
    payload=TransferObserved,
    description="Synthetic transfers from the test helpers (test mode only), keyed "
    "`{network}:{address}`, as a watcher would write them.",
)
WATCHER_CURSORS_OUT = Publication(
    CHAIN_CURSORS,
    writer="pago-watcher",
    payload=CursorCommitted,
    description="The last block or slot whose transfers the broker acknowledged, all of "
    "them. Compacted; key `{network}:{mode}`; headers `pago-fence` (leadership term) and "
    "`pago-covered` (per watch-list partition, the offset below which every address was "
    "checked up to the cursor).",
)
API_CARD_SESSIONS = Publication(
    CARD_SESSIONS,
    writer="pago-api",
    payload=CardSessionEvent,
    description="`card_session.created` when a card session is made at its provider; "
    "`card_session.completed`, `.failed`, `.expired` or `.cancelled` when a provider webhook, a "
    "status read or the expiry moves it (status precedence: a terminal status is never left)."
    + _CARD_SESSIONS_NOTE,
)
API_CARD_PROVIDER_EVENTS = Publication(
    CARD_PROVIDER_EVENTS,
    writer="pago-api",
    payload=CardProviderEventReceived,
    description="Every provider webhook (Stripe, Adyen, PayPal), verified with the provider's "
    "own scheme and seen for the first time (the inbox's unique `(provider, "
    "provider_event_id)`), from the outbox in the transaction that recorded it, whether or not "
    "it moved a session. Key: `session_id`. No Pago service reads it yet: it is the audit "
    "trail, for analytics and reconciliation. 14 days.",
)
DEADLETTERS = tuple(
    Publication(
        DEADLETTER,
        writer=writer,
        payload=payload,
        description=f"Records of {source} that {writer} could not process: undecodable, "
        "invalid, a newer major version, an unknown `event_type`, or poison." + _DEADLETTER_NOTE,
    )
    for writer, source, payload in (
        ("pago-matcher", f"`{CHAIN_TRANSFERS}`", Transfers),
        (
            "pago-notifier",
            f"`{CHECKOUT_SESSIONS}` and `{CARD_SESSIONS}`",
            SessionEvent | CardSessionEvent,
        ),
        ("pago-watcher", f"`{CHAIN_WATCHLIST}`", WatchAddress),
    )
)

PUBLICATIONS: tuple[Publication, ...] = (
    API_SESSIONS,
    MATCHER_SESSIONS,
    API_WATCHLIST,
    MATCHER_WATCHLIST,
    WATCHER_TRANSFERS,
    API_TRANSFERS,
    WATCHER_CURSORS_OUT,
    API_CARD_SESSIONS,
    API_CARD_PROVIDER_EVENTS,
    *DEADLETTERS,
)
