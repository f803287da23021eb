"""The live session feed in Redis: the contract between its writer and the hosted page's readers.

Writer: the notifier, for every ``checkout.sessions`` event it consumes (after the webhook
deliveries are stored). Readers: the api's SSE endpoint on every replica, so a page stays live
whichever replica it is connected to.

Per session (the ``{…}`` hash tag keeps a session's keys on one Redis Cluster slot):

- stream ``pago:live:{<session id>}`` — one entry per event, field ``event`` = the event's JSON
  exactly as on Kafka; the entry id is the SSE ``id`` (``Last-Event-ID`` replays what follows
  it). Capped at about ``MAX_ENTRIES``; expires ``TTL_SECONDS`` after the last write.
- set ``pago:live:{<session id>}:seen`` — event ids already appended: a Kafka redelivery appends
  nothing.
- channel ``pago:live:{<session id>}`` — the new entry's id, published after each append: a
  wake-up for readers, who then read the stream (so a lost message delays, never loses).

Redis may lose all of it (it holds only what can be rebuilt): a page always starts from the
session in Postgres, and the feed only brings what changed since.
"""

from __future__ import annotations

MAX_ENTRIES = 100
TTL_SECONDS = 3 * 86_400
"""Longer than a session lives (expiry, the underpaid extension, the late-payment grace)."""
FIELD = "event"


def stream_key(session_id: str) -> str:
    return f"pago:live:{{{session_id}}}"


def seen_key(session_id: str) -> str:
    return f"{stream_key(session_id)}:seen"


def channel(session_id: str) -> str:
    return stream_key(session_id)


APPEND = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], id)
return id
"""
"""KEYS: stream, seen set. ARGV: event id, event JSON, ttl seconds, max entries. Returns the
new entry id, or nil when the event was appended before."""
