"""The matcher's outbox relay, on a thread of its own with its own event loop.

The relay is in-process, as the service contract wants, but not on the consumer's loop: a
relay batch serializes a few thousand sends without yielding, and on the shared loop the
consumer would sit behind it every time Postgres answered. On its own thread the interpreter
switches between the two every few milliseconds instead (``sys.getswitchinterval``), and the
relay fills the time the consumer spends waiting on Postgres. It has its own engine and
producer: asyncpg connections and aiokafka clients belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from pago.common.db.engine import create_engine
from pago.common.kafka import create_producer
from pago.common.outbox import OutboxRelay

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 5.0
"""Seconds a stopping relay spends publishing what the last batches wrote (whatever remains is
published by the next relay to take the shard)."""
START_TIMEOUT = 30.0
"""Seconds to wait for the relay's producer to connect."""
BATCH_SIZE = 2000
"""One relay loop publishes ~10,000 events/s, several times what the matcher writes."""


class RelayThread:
    def __init__(self, database_url: str, bootstrap_servers: str) -> None:
        self._database_url = database_url
        self._bootstrap_servers = bootstrap_servers
        self._thread = threading.Thread(target=self._main, name="pago-matcher-relay", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relay: OutboxRelay | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False

    @property
    def healthy(self) -> bool:
        """False once the thread has died without being asked to stop (liveness fails)."""
        return not self._thread.ident or self._thread.is_alive() or self._stopped

    async def start(self) -> None:
        """Start the thread; return once its producer is connected (raise if it could not)."""
        self._thread.start()
        started = await asyncio.to_thread(self._started.wait, START_TIMEOUT)
        if self._error is not None:
            raise RuntimeError("the outbox relay could not start") from self._error
        if not started:
            raise TimeoutError("the outbox relay did not start in time")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            log.exception("the outbox relay stopped with an error")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        engine = create_engine(
            self._database_url, pool_size=2, application_name="pago-matcher-relay"
        )
        producer = create_producer(self._bootstrap_servers, client_id="pago-matcher-relay")
        try:
            await producer.start()
            self._relay = OutboxRelay(engine, producer, workers=1, batch_size=BATCH_SIZE)
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self._relay.run()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._relay.drain(), timeout=DRAIN_TIMEOUT)
        finally:
            await producer.stop()
            await engine.dispose()

    async def stop(self, grace: float) -> None:
        """Finish the batch in flight, publish what is left (briefly), and end the thread."""
        self._stopped = True
        if self._loop is not None and self._relay is not None and self._loop.is_running():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                self._loop.call_soon_threadsafe(self._relay.stop)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, grace)
