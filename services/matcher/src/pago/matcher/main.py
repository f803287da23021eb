"""``pago-matcher``: run the matcher, or (``pago-matcher aml import-ofac``, the same as
``pago-matcher-admin import-ofac``) refresh the sanctions list from the official OFAC SDN file.

``pago-matcher`` / ``pago-matcher run``: load settings (one clear line and exit 2 when one is
missing or wrong), log JSON, consume until SIGTERM/SIGINT, then stop gracefully and exit 0.
SIGHUP re-reads the sanctions list.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pago.common.logging import configure_logging
from pago.common.settings import exit_with, load_settings
from pago.matcher import cli
from pago.matcher.app import create_app
from pago.matcher.settings import MatcherSettings

SERVICE = "pago-matcher"


async def serve(settings: MatcherSettings) -> None:
    app = create_app(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    loop.add_signal_handler(signal.SIGHUP, app.reload_sanctions)
    await app.run()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume chain.transfers and run the scheduler (the default)")
    aml = sub.add_parser("aml", help="AML sanctions list tools (as pago-matcher-admin)")
    cli.add_import_ofac(aml.add_subparsers(dest="aml_command", required=True))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "aml":
        cli.import_ofac(args.source, args.out)
        return
    settings = load_settings(MatcherSettings, SERVICE)
    configure_logging(SERVICE, settings.log_level)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        exit_with(SERVICE, "interrupted")
    except Exception as exc:
        # Broker or database unreachable at start, most likely: say so in one line (the JSON
        # log has the traceback) and exit non-zero so the orchestrator restarts us.
        logging.getLogger(__name__).critical("matcher failed", exc_info=True)
        exit_with(SERVICE, f"stopped by {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
