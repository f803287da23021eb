"""The local card-provider server: every provider's fake on one port, for tests and ``make dev``.

::

    with CardProviderServer(webhook_base_url="http://127.0.0.1:8000") as server:
        server.url("stripe")          # http://127.0.0.1:<port>/stripe: an adapter's base URL
        server.set_failure("stripe", FailureMode.SERVER_ERROR, count=1)
        server.env_vars()             # PAGO_CARD_STRIPE_BASE_URL, …_API_KEY, …

Each provider module's ``build(ctx) -> Mount`` is mounted under ``/<provider>``. Besides them the
app answers ``GET /healthz`` and ``POST /_control/{provider}`` (also ``/<provider>/_control``)
with ``{"mode": "server_error", "count": 2, "timeout_seconds": 30}`` to set its ``FailureMode``
(``"call": "capture"``: of its captures instead of its creates).

uvicorn runs on a thread with its own event loop, on a socket bound before the apps are built
(so each provider knows its public URL, and no other process can take the port meanwhile).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from pago.devstack._support import DevStackError, wait_until
from pago.devstack.cardproviders.context import FailureMode, Faults, ProviderContext

log = logging.getLogger(__name__)

Builder = Callable[[ProviderContext], Mount]
Call = Literal["create", "capture"]
"""The provider call a ``FailureMode`` applies to."""

PROVIDERS = ("stripe", "adyen", "paypal")

DEV_SECRETS: Mapping[str, Mapping[str, str]] = {
    "stripe": {"api_key": "sk_test_pago_local", "webhook_secret": "whsec_pago_local_stripe"},
    "adyen": {
        "api_key": "AQE_pago_local_adyen",
        "merchant_account": "PagoLocalECOM",
        # Adyen's HMAC keys are hex (32 bytes).
        "hmac_key": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    },
    "paypal": {
        "client_id": "pago-local-paypal-client",
        "client_secret": "pago-local-paypal-secret",
        "webhook_id": "WH-PAGOLOCAL0000000000000",
    },
}
"""Well-known development credentials: what the local providers accept and sign with."""

_ENV_NAMES: Mapping[str, Mapping[str, str]] = {
    "stripe": {"api_key": "API_KEY", "webhook_secret": "WEBHOOK_SECRET"},
    "adyen": {"api_key": "API_KEY", "merchant_account": "MERCHANT_ACCOUNT", "hmac_key": "HMAC_KEY"},
    "paypal": {
        "client_id": "CLIENT_ID",
        "client_secret": "CLIENT_SECRET",
        "webhook_id": "WEBHOOK_ID",
    },
}
"""Secret name → suffix of ``PAGO_CARD_<PROVIDER>_…``, the api's settings."""


def default_providers() -> dict[str, Builder]:
    """Every provider module of this package that exists, by name."""
    found: dict[str, Builder] = {}
    for name in PROVIDERS:
        try:
            module = importlib.import_module(f"pago.devstack.cardproviders.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pago.devstack.cardproviders.{name}":
                raise
            continue
        found[name] = module.build
    return found


def webhook_url(api_base_url: str, provider: str) -> str:
    """Where Pago's api takes ``provider``'s webhooks."""
    return f"{api_base_url.rstrip('/')}/api/v1/webhooks/{provider}"


def build_app(
    builders: Mapping[str, Builder], contexts: Mapping[str, ProviderContext]
) -> Starlette:
    """One ASGI app: each provider under ``/<name>``, control and health beside them."""

    async def control(request: Request) -> Response:
        name = request.path_params.get("provider") or request.url.path.strip("/").split("/")[0]
        ctx = contexts.get(name)
        if ctx is None:
            return JSONResponse({"error": f"no provider {name!r}"}, status_code=404)
        try:
            body = json.loads(await request.body() or b"{}")
            mode = FailureMode(body.get("mode", "ok"))
            count = body.get("count")
            if count is not None and (not isinstance(count, int) or count < 1):
                raise ValueError("count must be a positive integer")
            call = body.get("call", "create")
            if call not in ("create", "capture"):
                raise ValueError("call must be 'create' or 'capture'")
            timeout = float(body.get("timeout_seconds", ctx.faults.timeout_seconds))
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        _set(ctx, call, Faults(mode=mode, remaining=count, timeout_seconds=timeout))
        return JSONResponse({"provider": name, "mode": mode, "count": count, "call": call})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "providers": sorted(contexts)})

    routes: list[BaseRoute] = [
        Route("/healthz", health, methods=["GET"]),
        Route("/_control/{provider}", control, methods=["POST"]),
    ]
    for name, build in builders.items():
        routes.append(Route(f"/{name}/_control", control, methods=["POST"]))
        routes.append(build(contexts[name]))
    return Starlette(routes=routes)


def _set(ctx: ProviderContext, call: Call, faults: Faults) -> None:
    if call == "capture":
        ctx.capture_faults = faults
    else:
        ctx.faults = faults


@dataclass
class CardProviderServer:
    """The local providers on one port of ``host``; ``start()``/``stop()`` or ``with``."""

    webhook_base_url: str | None = None
    """Pago's api base URL: webhooks go to ``<it>/api/v1/webhooks/<provider>`` (None: none
    are sent; events are only recorded)."""
    providers: Mapping[str, Builder] | None = None
    """Builders by name; default ``default_providers()``."""
    secrets: Mapping[str, Mapping[str, str]] | None = None
    """Credentials by provider; default ``DEV_SECRETS``."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: any free port."""

    def __post_init__(self) -> None:
        self.contexts: dict[str, ProviderContext] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: list[BaseException] = []

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise DevStackError("the card-provider server is not running")
        return self._base_url

    def url(self, provider: str) -> str:
        """``provider``'s base URL (what an adapter is configured with)."""
        return self.contexts[provider].public_url

    def start(self) -> Self:
        if self._server is not None:
            raise DevStackError("the card-provider server is already running")
        builders = dict(self.providers if self.providers is not None else default_providers())
        secrets = self.secrets if self.secrets is not None else DEV_SECRETS
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        port = sock.getsockname()[1]
        self._base_url = f"http://{self.host}:{port}"
        self.contexts = {
            name: ProviderContext(
                public_url=f"{self._base_url}/{name}",
                webhook_url=(
                    webhook_url(self.webhook_base_url, name) if self.webhook_base_url else None
                ),
                secrets=dict(secrets.get(name, {})),
            )
            for name in builders
        }
        app = build_app(builders, self.contexts)
        # A request held by the timeout failure mode must not hold the stop: 1 s grace.
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = server = uvicorn.Server(config)

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:
                self._error.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name="card-provider-server", daemon=True)
        self._thread.start()
        try:
            wait_until(
                lambda: server.started or bool(self._error) or not self._thread_alive(),
                10,
                "the card-provider server",
            )
        except BaseException:
            self.stop()
            raise
        if not server.started:
            self.stop()
            raise DevStackError(f"the card-provider server did not start: {self._error!r}")
        log.info("card providers %s on %s", ", ".join(builders), self._base_url)
        return self

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Idempotent; returns once the port is closed."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(10)
            if thread.is_alive():
                log.warning("the card-provider server did not stop within 10 s")

    close = stop

    def set_failure(
        self,
        provider: str,
        mode: FailureMode,
        *,
        count: int | None = None,
        timeout_seconds: float | None = None,
        call: Call = "create",
    ) -> None:
        """What ``POST /_control/<provider>`` does, from the test's own process."""
        ctx = self.contexts[provider]
        timeout = ctx.faults.timeout_seconds if timeout_seconds is None else timeout_seconds
        _set(ctx, call, Faults(mode=mode, remaining=count, timeout_seconds=timeout))

    def env_vars(self) -> dict[str, str]:
        """The api's settings for these providers: ``PAGO_CARD_<PROVIDER>_BASE_URL`` and the
        credentials (``…_API_KEY``, ``…_WEBHOOK_SECRET``, ``…_CLIENT_ID``, …)."""
        env: dict[str, str] = {}
        for name, ctx in self.contexts.items():
            prefix = f"PAGO_CARD_{name.upper()}_"
            env[prefix + "BASE_URL"] = ctx.public_url
            for secret, suffix in _ENV_NAMES.get(name, {}).items():
                if secret in ctx.secrets:
                    env[prefix + suffix] = ctx.secrets[secret]
        return env

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
