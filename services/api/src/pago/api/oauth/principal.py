"""Who is calling the card API: an OAuth 2.0 client, proven by a verified JWT."""

from __future__ import annotations

from dataclasses import dataclass

from pago.common.enums import Mode

SCOPE_SESSIONS_WRITE = "sessions:write"
"""Create card checkout sessions (``POST /api/v1/sessions``)."""
SCOPE_SESSIONS_READ = "sessions:read"
"""Read them (``GET /api/v1/sessions/{id}``)."""


@dataclass(frozen=True, slots=True)
class ClientPrincipal:
    """The verified token's client. Every card query is scoped to ``merchant_id`` and ``mode``."""

    client_id: str
    merchant_id: str
    mode: Mode
    scopes: frozenset[str]
    issuer: str
    """``iss`` of the token: Pago's own issuer, or a trusted external OIDC issuer."""
