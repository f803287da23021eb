"""``python -m pago.common.outbox``: run the relay alone (an ops tool and a crash-test subject)."""

from __future__ import annotations

import asyncio
import signal

from pago.common.db.engine import create_engine
from pago.common.kafka import create_producer
from pago.common.logging import configure_logging
from pago.common.outbox.relay import OutboxRelay
from pago.common.settings import CommonSettings, load_settings


async def _main(settings: CommonSettings) -> None:
    engine = create_engine(settings.database_url, pool_size=2, application_name="pago-relay")
    producer = create_producer(settings.kafka_bootstrap_servers, client_id="pago-relay")
    await producer.start()
    relay = OutboxRelay(engine, producer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run()
    finally:
        await producer.stop()
        await engine.dispose()


def main() -> None:
    settings = load_settings(CommonSettings, "pago-outbox-relay")
    configure_logging("pago-outbox-relay", settings.log_level)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
