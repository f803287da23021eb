"""What every local provider (``stripe``, ``adyen``, ``paypal``) is built from.

The local card-provider server is one HTTP server on one port: each provider is mounted under its
own prefix (``/stripe``, ``/adyen``, ``/paypal``) and speaks that provider's real wire format
there, so an adapter's configurable base URL is ``<server>/<provider>``. Each provider module
exposes ``build(ctx: ProviderContext) -> starlette.routing.Mount``; ``server.py`` mounts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FailureMode(StrEnum):
    """How a provider answers its next create calls (set through ``POST /<provider>/_control``
    with ``{"mode": …, "count": n}``; ``count`` omitted: until changed) — or, with ``"call":
    "capture"``, its next captures (PayPal's only: the one provider call after a create)."""

    OK = "ok"
    TIMEOUT = "timeout"
    """Holds the request past any sane client timeout (then answers normally: an orphan)."""
    SERVER_ERROR = "server_error"
    """500 in the provider's error format."""
    RATE_LIMITED = "rate_limited"
    """429 in the provider's error format."""
    DECLINE = "decline"
    """Creates normally; the hosted page's Pay then declines the card."""


@dataclass
class Faults:
    """The failure mode of one provider, changed by tests and read by its create handler."""

    mode: FailureMode = FailureMode.OK
    remaining: int | None = None
    """Calls left in ``mode`` before it returns to ``OK`` (``None``: no limit)."""
    timeout_seconds: float = 30.0

    def take(self) -> FailureMode:
        """The mode for this call, counting it down."""
        mode = self.mode
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode, self.remaining = FailureMode.OK, None
        return mode


@dataclass
class ProviderContext:
    """One provider's configuration in the local server."""

    public_url: str
    """This provider's base URL as clients see it (``http://127.0.0.1:<port>/stripe``): hosted
    page links are built from it."""
    webhook_url: str | None
    """Where its signed webhooks go (Pago's ``/api/v1/webhooks/<provider>``); ``None``: kept
    only in the server's log of events."""
    secrets: dict[str, str] = field(default_factory=dict)
    """The credentials it accepts and signs with, by name (``api_key``, ``webhook_secret``,
    ``hmac_key``, ``client_id``, ``client_secret``, ``webhook_id`` …)."""
    faults: Faults = field(default_factory=Faults)
    """Read by the create handler."""
    capture_faults: Faults = field(default_factory=Faults)
    """Read by the capture handler (PayPal's ``/v2/checkout/orders/{id}/capture``)."""
