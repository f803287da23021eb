"""Webhook signatures: IronixPay's ``X-Signature`` and Standard Webhooks' ``webhook-signature``.

A secret is ``whsec_`` + base64 of random bytes (the Standard Webhooks format). The two
schemes key their HMAC differently, each as its own verifiers expect:

- ``X-Signature = hex(HMAC-SHA256(key = the whole "whsec_…" string as UTF-8,
  msg = "<X-Timestamp>.<raw body>"))`` — what an existing IronixPay integration computes;
- ``webhook-signature = "v1,<base64(HMAC-SHA256(key = base64-decoded part after "whsec_",
  msg = "<webhook-id>.<webhook-timestamp>.<raw body>"))>"``, several space-separated during a
  secret rotation (the spec's way of carrying one signature per valid secret).

During the 24 h after a rotation the previous secret signs too: in ``webhook-signature`` beside
the current one, and in ``X-Signature-Previous`` (``X-Signature`` holds one value only, so an
integration still configured with the old secret fails until it is updated, and the schedule
retries it meanwhile).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret


def _secret_bytes(secret: str) -> bytes:
    """The Standard Webhooks key: the base64 after ``whsec_``."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None


def x_signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets: Sequence[str], *, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Both schemes' headers for ``body``; ``secrets`` is the current secret first, then the
    previous one while its overlap lasts."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    headers = {
        "X-Timestamp": str(timestamp),
        "X-Signature": x_signature(secrets[0], timestamp, body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id, timestamp, body) for s in secrets
        ),
    }
    if len(secrets) > 1:
        headers["X-Signature-Previous"] = x_signature(secrets[1], timestamp, body)
    return headers
