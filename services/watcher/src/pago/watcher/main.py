"""``pago-watcher``: stream one network's token transfers to watched addresses into Kafka.

    pago-watcher --network BASE --mode live [--start-block N] [--rpc-url URL ...]
                 [--http-port 8083]

Flags override ``PAGO_WATCHER_NETWORK``, ``PAGO_WATCHER_MODE``, ``PAGO_WATCHER_START_BLOCK``,
``PAGO_WATCHER_RPC_URLS`` and ``PAGO_WATCHER_HTTP_PORT``. Needs ``KAFKA_BOOTSTRAP_SERVERS`` and
(for the lease) ``REDIS_URL``; never a database. A missing or wrong setting exits 2 with one
line naming it; SIGTERM/SIGINT stop gracefully (the publish in flight finishes, the cursor is
written, the lease released) and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from pago.common.enums import Mode, Network
from pago.common.errors import ConfigError
from pago.common.logging import configure_logging
from pago.common.settings import describe_validation_error, exit_with
from pago.watcher.app import create_app
from pago.watcher.chains.factory import build_source
from pago.watcher.core.rpc import WrongChain
from pago.watcher.settings import WatcherSettings

SERVICE = "pago-watcher"
log = logging.getLogger(SERVICE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", choices=[n.value for n in Network])
    parser.add_argument("--mode", choices=[m.value for m in Mode])
    parser.add_argument("--start-block", type=int, help="first block of a first start")
    parser.add_argument(
        "--rpc-url", action="append", help="an RPC endpoint (repeat for failover; first wins)"
    )
    parser.add_argument("--http-port", type=int, help="health and metrics port (0: any)")
    return parser


def load(argv: list[str]) -> WatcherSettings:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.network:
        overrides["network"] = args.network
    if args.mode:
        overrides["mode"] = args.mode
    if args.start_block is not None:
        overrides["start_block"] = args.start_block
    if args.rpc_url:
        overrides["rpc_urls"] = ",".join(args.rpc_url)
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    try:
        settings = WatcherSettings(**overrides)  # type: ignore[arg-type]
        settings.registry.network(settings.network).mode(settings.mode)
    except ValidationError as exc:
        message = describe_validation_error(WatcherSettings, exc)
        exit_with(
            SERVICE,
            message.replace("PAGO_WATCHER_NETWORK", "--network").replace(
                "PAGO_WATCHER_MODE", "--mode"
            ),
        )
    except ConfigError as exc:
        exit_with(SERVICE, str(exc))
    return settings


async def serve(settings: WatcherSettings) -> None:
    app = create_app(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    await app.run()


def main(argv: list[str] | None = None) -> None:
    settings = load(sys.argv[1:] if argv is None else argv)
    configure_logging(SERVICE, settings.log_level)
    try:
        # Built once here only to fail fast with one line (no endpoint, unknown family).
        asyncio.run(build_source(settings).aclose())
    except ConfigError as exc:
        exit_with(SERVICE, str(exc))
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        exit_with(SERVICE, "interrupted")
    except WrongChain as exc:
        exit_with(SERVICE, str(exc))
    except Exception:
        log.exception("the watcher failed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
