"""Development only: fresh keys for a pool that runs low, and where their secrets are kept.

Pago is watch-only: production never generates a key (``PoolRefiller`` refuses to exist
outside ``PAGO_ENV=development``). In development the demo merchant's pools refill themselves
with new keys — ed25519 for Solana, a random secp256k1 key's address for EVM and TRON. The
secrets are written only into the dev stack's own directory (``PAGO_DEV_POOL_KEYS_DIR``, which
``make dev`` sets to ``.devstack/pool-keys``) so a developer can sweep what test payments left
there; without that setting they are discarded.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import base58

from pago.common.enums import ChainFamily


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    address: str
    secret: str
    """EVM and TRON: the 32-byte private key in hex. Solana: the 64-byte keypair (seed ‖
    public key) in base58, the form wallets import."""


def generate(family: ChainFamily, count: int) -> list[GeneratedKey]:
    """``count`` new keys of ``family`` and their addresses (about 0.1 ms each)."""
    from bip_utils import (
        Ed25519PrivateKey,
        EthAddrEncoder,
        Secp256k1PrivateKey,
        SolAddrEncoder,
        TrxAddrEncoder,
    )

    keys: list[GeneratedKey] = []
    while len(keys) < count:
        seed = secrets.token_bytes(32)
        if family is ChainFamily.SOLANA:
            ed = Ed25519PrivateKey.FromBytes(seed)
            address = str(SolAddrEncoder.EncodeKey(ed.PublicKey()))
            keypair = seed + ed.PublicKey().RawCompressed().ToBytes()[1:]
            keys.append(GeneratedKey(address, base58.b58encode(keypair).decode()))
            continue
        try:
            sk = Secp256k1PrivateKey.FromBytes(seed)
        except ValueError:  # 0 or >= the curve order: about 2^-128, draw again
            continue
        encoder = EthAddrEncoder if family is ChainFamily.EVM else TrxAddrEncoder
        keys.append(GeneratedKey(str(encoder.EncodeKey(sk.PublicKey())), seed.hex()))
    return keys


class KeyStore:
    """Appends generated keys to ``<dir>/<merchant>.<family>.<mode>.jsonl`` (mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def path(self, merchant_id: str, family: ChainFamily, mode: str) -> Path:
        return self._dir / f"{merchant_id}.{family.value}.{mode}.jsonl"

    def save(
        self, merchant_id: str, family: ChainFamily, mode: str, keys: list[GeneratedKey]
    ) -> None:
        """Written before the addresses are inserted: an address never exists without its key
        (a rolled-back insert leaves a key nobody was shown, which is harmless)."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(merchant_id, family, mode)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            for key in keys:
                out.write(json.dumps({"address": key.address, "secret": key.secret}) + "\n")
