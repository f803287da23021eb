"""``pago-notifier``: consume ``checkout.sessions`` and deliver signed webhooks until SIGTERM.

Settings come from the environment (one clear line and exit 2 when one is missing or wrong);
logs are JSON with secrets scrubbed. SIGTERM/SIGINT stop gracefully (see ``app``) and exit 0;
a failure at start (the broker or the database unreachable) or a consumer that had to halt is
one line on stderr and exit 2, so the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from pago.common.logging import configure_logging
from pago.common.settings import exit_with, load_settings
from pago.notifier.app import create_app
from pago.notifier.settings import NotifierSettings

SERVICE = "pago-notifier"


async def serve(settings: NotifierSettings) -> None:
    app = create_app(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    await app.run()


def main() -> None:
    settings = load_settings(NotifierSettings, SERVICE)
    configure_logging(SERVICE, settings.log_level)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        exit_with(SERVICE, "interrupted")
    except Exception as exc:
        # Broker or database unreachable at start, most likely: say so in one line (the JSON
        # log has the traceback) and exit non-zero so the orchestrator restarts us.
        logging.getLogger(__name__).critical("notifier failed", exc_info=True)
        exit_with(SERVICE, f"stopped by {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
