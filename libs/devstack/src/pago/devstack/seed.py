"""Seed the dev stack: a demo merchant with a test key, xpubs and a Solana address pool.

The pool's private keys are kept beside the stack (``<workdir>/pool-keys``, the file the api
appends to when it refills a development pool), never in the database, so a developer can
sweep what test payments left on them.

Seeding goes through ``pago-admin`` exactly as an operator would. The demo key is kept in
``<workdir>/demo.json`` (dev only: the database stores only its hash) so a restarted
``make dev`` prints the same key.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pago.devstack._support import DevStackError, venv_command

DEMO_MERCHANT = "mch_demo"
DEMO_FILE = "demo.json"
# The BIP39 test-vector mnemonic: public knowledge, which is the point of a dev wallet. It is not
# anvil's mnemonic, so deposit addresses never coincide with the funded payer accounts.
DEV_MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
SOLANA_POOL_SIZE = 200
POOL_KEYS_DIR = "pool-keys"


@dataclass(frozen=True, slots=True)
class Demo:
    merchant_id: str
    api_key: str


def _admin(args: Sequence[str], env: Mapping[str, str], stdin: str | None = None) -> Any:
    result = subprocess.run(
        [venv_command("pago-admin"), "--json", *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise DevStackError(f"pago-admin {' '.join(args)} failed: {detail}")
    return json.loads(result.stdout) if result.stdout.strip() else None


def account_xpubs(mnemonic: str = DEV_MNEMONIC) -> dict[str, str]:
    """Account-level xpubs (m/44'/60'/0' and m/44'/195'/0') of ``mnemonic``."""
    from bip_utils import Bip39SeedGenerator, Bip44, Bip44Coins

    seed = Bip39SeedGenerator(mnemonic).Generate()
    out = {}
    for family, coin in (("evm", Bip44Coins.ETHEREUM), ("tron", Bip44Coins.TRON)):
        account = Bip44.FromSeed(seed, coin).Purpose().Coin().Account(0)
        out[family] = str(account.PublicKey().ToExtended())
    return out


def solana_pool(keys_dir: Path, size: int = SOLANA_POOL_SIZE) -> list[str]:
    """Fresh owner pubkeys for the demo Solana pool; their keypairs (base58, as wallets import
    them) go to ``keys_dir/mch_demo.solana.test.jsonl`` (mode 0600), as the api's refills do."""
    from solders.keypair import Keypair

    keypairs = [Keypair() for _ in range(size)]
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys_dir / f"{DEMO_MERCHANT}.solana.test.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        for kp in keypairs:
            out.write(json.dumps({"address": str(kp.pubkey()), "secret": str(kp)}) + "\n")
    return [str(kp.pubkey()) for kp in keypairs]


def _merchant_exists(env: Mapping[str, str], merchant_id: str) -> bool:
    merchants = _admin(["merchant", "list"], env) or []
    return any(m.get("id") == merchant_id for m in merchants)


def seed(workdir: Path, env: Mapping[str, str]) -> Demo:
    """Create the demo merchant once; return it with its test key."""
    saved = workdir / DEMO_FILE
    if saved.exists() and _merchant_exists(env, DEMO_MERCHANT):
        data = json.loads(saved.read_text())
        return Demo(data["merchant_id"], data["api_key"])
    if not _merchant_exists(env, DEMO_MERCHANT):
        _admin(
            ["merchant", "create", "--id", DEMO_MERCHANT, "--name", "Demo Store"],
            env,
        )
        for family, xpub in account_xpubs().items():
            _admin(
                ["xpub", "register", DEMO_MERCHANT, "--family", family, "--mode", "test", xpub], env
            )
        pool = "\n".join(solana_pool(workdir / POOL_KEYS_DIR)) + "\n"
        _admin(
            ["pool", "import", DEMO_MERCHANT, "--family", "solana", "--mode", "test", "-"],
            env,
            pool,
        )
    created = _admin(["key", "create", DEMO_MERCHANT, "--mode", "test", "--label", "make dev"], env)
    demo = Demo(DEMO_MERCHANT, str(created["key"]))
    saved.write_text(json.dumps({"merchant_id": demo.merchant_id, "api_key": demo.api_key}))
    os.chmod(saved, 0o600)
    return demo
