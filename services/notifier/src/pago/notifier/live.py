"""The live feed for the hosted checkout page: every session event, appended to Redis.

See ``pago.common.live`` for the keys. Best effort by design: Redis holds only what can be
rebuilt, a page reads the session from Postgres when it connects, and webhooks never wait on
Redis. A failed append is counted and logged, and the batch's offsets still move.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from pago.common import live
from pago.common.events import AnySessionEvent
from pago.notifier import metrics

log = logging.getLogger(__name__)


class LiveFeed:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._append = redis.register_script(live.APPEND)

    async def publish(self, events: Sequence[AnySessionEvent]) -> int:
        """Append ``events`` in order (one round trip); returns how many were new."""
        if not events:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    await self._append(
                        keys=[live.stream_key(event.session_id), live.seen_key(event.session_id)],
                        args=[event.event_id, event.to_bytes(), live.TTL_SECONDS, live.MAX_ENTRIES],
                        client=pipe,
                    )
                results = await pipe.execute()
        except Exception:
            metrics.LIVE_FEED_ERRORS.inc()
            log.warning("could not append to the live feed", exc_info=True)
            return 0
        appended = sum(1 for r in results if r)
        metrics.LIVE_FEED_EVENTS.inc(appended)
        return appended
