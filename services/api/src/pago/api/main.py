"""``pago-api``: load settings, configure logging, serve with uvicorn.

    pago-api [--host 0.0.0.0] [--port 8000] [--workers 1]

Flags override ``PAGO_API_HOST``, ``PAGO_API_PORT`` and ``PAGO_API_WORKERS``. ``/metrics`` is
served on ``PAGO_API_METRICS_PORT``: by the app itself with one worker; with several, by this
server process, which adds up the files the workers write (Prometheus multiprocess mode).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import tempfile
import threading

import uvicorn
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from pago.api.app import MULTIPROCESS_ENV, create_app
from pago.api.settings import ApiSettings
from pago.common.health import HealthServer
from pago.common.logging import configure_logging
from pago.common.settings import load_settings

SERVICE = "pago-api"


def _settings() -> ApiSettings:
    """The api's settings, every feature's included: a wrong one stops the process at start
    with one line, not at the first request that needs it."""
    return load_settings(ApiSettings, SERVICE)


def build_app() -> FastAPI:
    """The uvicorn factory: every worker process loads its own settings."""
    settings = _settings()
    configure_logging(SERVICE, settings.log_level)
    app = create_app(settings)
    # Everything imported and built so far lives as long as the process: keep it out of the
    # collector's full passes, which otherwise show up as tail latency.
    gc.collect()
    gc.freeze()
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description="Serve the Pago HTTP API.")
    parser.add_argument("--host", help="bind address (default PAGO_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PAGO_API_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="processes (default PAGO_API_WORKERS or 1)")
    args = parser.parse_args(argv)
    settings = _settings()
    configure_logging(SERVICE, settings.log_level)
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal to the
    # handler that was installed before it started. A no-op handler there turns the re-raise
    # into a normal return: a graceful stop exits 0, which is what Kubernetes and make dev expect.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    workers = args.workers or settings.api_workers
    if workers > 1:
        _serve_worker_metrics(settings.api_metrics_port)
    uvicorn.run(
        "pago.api.main:build_app",
        factory=True,
        host=args.host or settings.api_host,
        port=settings.api_port if args.port is None else args.port,
        workers=workers,
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=20,
    )


def _serve_worker_metrics(port: int) -> None:
    """Workers (spawned after this) write metrics under a fresh directory; a thread of this
    process serves their sum on ``port``."""
    directory = os.environ.get(MULTIPROCESS_ENV) or tempfile.mkdtemp(prefix="pago-api-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory

    def render() -> tuple[bytes, str]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    async def serve() -> None:
        server = HealthServer(port, ready=lambda: True, metrics=render)
        await server.start()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), name="metrics", daemon=True).start()


if __name__ == "__main__":
    main()
