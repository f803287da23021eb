"""Client credentials and signing-key material (pure: formats, hashing, encryption at rest).

A client secret is 32 random bytes, so a peppered HMAC-SHA256 (as for API keys) is enough: no
slow hash is needed against guessing, and the lookup stays one unique-index probe. The
private half of a signing key is stored under AES-256-GCM with a key derived (HKDF-SHA256)
from ``PAGO_OAUTH_KEY_ENCRYPTION_SECRET`` and its ``kid`` as associated data, so a row copied
under another kid does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import ECKey

from pago.api.oauth.principal import SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE

SIGNING_ALGORITHM = "ES256"
"""ECDSA P-256 with SHA-256: every JOSE verifier and API gateway supports it (EdDSA is still
missing from several), its keys and signatures are small (64-byte signatures, 4x shorter than
RS256's), and verification costs ~0.1 ms with ``cryptography``."""
SIGNING_CURVE = "P-256"

KNOWN_SCOPES = (SCOPE_SESSIONS_WRITE, SCOPE_SESSIONS_READ)
"""What a client may be allowed (``pago-admin oauth-client create --scope``)."""

_CLIENT_ID = re.compile(r"cli_[0-9a-f]{24}")
_SECRET = re.compile(r"cs_[A-Za-z0-9_-]{43}")
_HKDF_INFO = b"pago oauth signing key v1"
_NONCE_BYTES = 12


def generate_client_id() -> str:
    return f"cli_{secrets.token_bytes(12).hex()}"


def is_client_id(value: str) -> bool:
    return _CLIENT_ID.fullmatch(value) is not None


def generate_client_secret() -> str:
    return f"cs_{secrets.token_urlsafe(32)}"


def is_client_secret(value: str) -> bool:
    return _SECRET.fullmatch(value) is not None


def hash_client_secret(pepper: bytes, secret: str) -> bytes:
    # Domain-separated from API keys' HMAC under the same pepper.
    return hmac.new(pepper, b"oauth-client-secret:" + secret.encode(), hashlib.sha256).digest()


def secret_hint(secret: str) -> str:
    return f"{secret[:5]}…{secret[-4:]}"


def _aead(secret: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
    return AESGCM(key)


def encrypt_private_key(secret: bytes, kid: str, pem: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _aead(secret).encrypt(nonce, pem, kid.encode())


def decrypt_private_key(secret: bytes, kid: str, blob: bytes) -> bytes:
    """The PEM, or ``cryptography.exceptions.InvalidTag`` for a wrong secret or kid."""
    nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
    return _aead(secret).decrypt(nonce, sealed, kid.encode())


def generate_signing_key() -> ECKey:
    """A fresh P-256 key whose ``kid`` is its RFC 7638 thumbprint."""
    return ECKey.generate_key(
        SIGNING_CURVE,
        {"use": "sig", "alg": SIGNING_ALGORITHM},
        private=True,
        auto_kid=True,
    )
