"""The SSE stream of one session's page state: Postgres first, then the Redis live feed.

The notifier appends every session event to a Redis stream and publishes the new entry's id on
the session's channel (``pago.common.live``); any api replica can therefore serve any page.
A connection:

1. subscribes to the channel (before reading anything, so nothing slips between);
2. with ``Last-Event-ID``: replays the stream entries after it; without one — or when the
   stream no longer reaches back that far — sends the state read from Postgres, tagged with the
   stream's newest entry id (read *before* Postgres, so an entry landing meanwhile is sent
   again rather than skipped: a repeat is harmless, a gap is not);
3. then, on each channel message, sends the entries after the last one sent. Every
   ``heartbeat`` seconds it sends a comment (proxies close silent connections) and re-reads
   Postgres, so a page stays right even while the feed is down.

The stream ends after a final state (paid, expired, blocked) or after ``max_duration`` (the
browser reconnects with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from pago.api.checkout_page.service import PageState
from pago.common import live
from pago.common.events import SESSION_EVENT_ADAPTER, SessionSnapshot

log = logging.getLogger(__name__)

RETRY_MS = 3000
"""How long a browser waits before reconnecting a dropped stream."""
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def _after(entry_id: str) -> str:
    """XRANGE's exclusive lower bound."""
    return f"({entry_id}"


def _frame(state: PageState, entry_id: str | None) -> bytes:
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: state\ndata: {state.model_dump_json()}\n\n".encode()


class LiveStream:
    def __init__(
        self,
        redis: Redis,
        session_id: str,
        *,
        load: Callable[[], Awaitable[SessionSnapshot]],
        to_state: Callable[[SessionSnapshot], PageState],
        heartbeat: float = 10.0,
        max_duration: float = 1800.0,
    ) -> None:
        self._redis = redis
        self._session_id = session_id
        self._key = live.stream_key(session_id)
        self._load = load
        self._to_state = to_state
        self._heartbeat = heartbeat
        self._max_duration = max_duration
        self._last_id: str | None = None
        self._last_state: PageState | None = None

    async def _entries(self, after: str | None) -> list[tuple[str, SessionSnapshot]]:
        """Feed entries after ``after`` (all when ``None``); none while Redis is down."""
        try:
            rows = await self._redis.xrange(self._key, min=_after(after) if after else "-")
        except RedisError:
            return []
        entries: list[tuple[str, SessionSnapshot]] = []
        for raw_id, fields in rows or ():
            entry_id = _text(raw_id)
            try:
                event = SESSION_EVENT_ADAPTER.validate_json((fields or {})[live.FIELD.encode()])
            except (KeyError, ValidationError):
                log.warning("skipping an unreadable live feed entry", extra={"id": entry_id})
                continue
            entries.append((entry_id, event.session))
        return entries

    async def _edge_id(self, *, newest: bool) -> str | None:
        try:
            rows = await (
                self._redis.xrevrange(self._key, count=1)
                if newest
                else self._redis.xrange(self._key, count=1)
            )
        except RedisError:
            return None
        return _text(rows[0][0]) if rows else None

    def _emit(self, state: PageState, entry_id: str | None) -> bytes:
        self._last_state = state
        if entry_id is not None:
            self._last_id = entry_id
        return _frame(state, entry_id)

    async def _from_database(self) -> bytes:
        newest = await self._edge_id(newest=True)
        return self._emit(self._to_state(await self._load()), newest)

    async def _first_frames(self, last_event_id: str | None) -> list[bytes]:
        if last_event_id is None or not _ENTRY_ID.fullmatch(last_event_id):
            return [await self._from_database()]
        oldest = await self._edge_id(newest=False)
        if oldest is None or _order(oldest) > _order(last_event_id):
            # The stream does not reach back to what the browser saw last: start over.
            return [await self._from_database()]
        self._last_id = last_event_id
        return [self._emit(self._to_state(s), i) for i, s in await self._entries(last_event_id)]

    async def _subscribe(self, pubsub: PubSub) -> bool:
        try:
            await pubsub.subscribe(live.channel(self._session_id))
        except RedisError:
            log.warning("live feed unavailable; the page falls back to polling", exc_info=True)
            return False
        return True

    async def _wait(self, pubsub: PubSub, subscribed: bool) -> bool:
        """Until a channel message (``True``) or the heartbeat (``False``)."""
        deadline = time.monotonic() + self._heartbeat
        while subscribed and (remaining := deadline - time.monotonic()) > 0:
            try:
                # Returns None early for a subscribe confirmation: wait on for the rest.
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
            except RedisError:
                break
            if message is not None:
                return True
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return False

    async def events(self, last_event_id: str | None) -> AsyncIterator[bytes]:
        """The SSE byte stream (see the module docstring)."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        started = time.monotonic()
        pubsub = self._redis.pubsub()
        try:
            subscribed = await self._subscribe(pubsub)
            for frame in await self._first_frames(last_event_id):
                yield frame
            while not self._final() and time.monotonic() - started < self._max_duration:
                woken = await self._wait(pubsub, subscribed)
                for entry_id, session in await self._entries(self._last_id):
                    yield self._emit(self._to_state(session), entry_id)
                if not woken:
                    yield b": keepalive\n\n"
                    state = self._to_state(await self._load())
                    if state != self._last_state:
                        yield self._emit(state, None)
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _final(self) -> bool:
        return self._last_state is not None and self._last_state.phase.is_final


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)
