"""Seed the dev stack: a demo merchant with a test key, xpubs, a Solana address pool and an
OAuth client of the card API (test mode, ``sessions:write sessions:read``).

The pool's private keys are kept beside the stack (``<workdir>/pool-keys``, the file the api
appends to when it refills a development pool), never in the database, so a developer can
sweep what test payments left on them.

Seeding goes through ``pago-admin`` exactly as an operator would. The demo key is kept in
``<workdir>/demo.json`` (mode 0600; dev only: the database stores only its hash) so a restarted
``make dev`` prints the same key; the card client's secret is kept there the same way. Both are
generated per dev stack (per work dir), never fixed values in the code.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
CARD_SCOPES = "sessions:write sessions:read"
CARD_CLIENT_LABEL = "make dev"
CARD_SESSION_EXAMPLE = Path(__file__).with_name("card_session.json")
"""The body of ``POST /api/v1/sessions`` the banner and the README show: seed 003's order
(AUD 140.76), kept as text because its amounts are JSON numbers with a decimal point."""


@dataclass(frozen=True, slots=True)
class Demo:
    merchant_id: str
    api_key: str
    card_client_id: str | None = None
    card_client_secret: str | None = None
    """The card API's client credentials (``POST /oauth/token``); None until seeded."""

    def to_json(self) -> dict[str, str | None]:
        return {
            "merchant_id": self.merchant_id,
            "api_key": self.api_key,
            "card_client_id": self.card_client_id,
            "card_client_secret": self.card_client_secret,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Demo:
        return cls(
            str(data["merchant_id"]),
            str(data["api_key"]),
            data.get("card_client_id"),
            data.get("card_client_secret"),
        )


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


def _card_client_active(env: Mapping[str, str], client_id: str) -> bool:
    clients = _admin(["oauth-client", "list", "--merchant", DEMO_MERCHANT], env) or []
    return any(c.get("id") == client_id and c.get("revoked_at") is None for c in clients)


def _card_client(env: Mapping[str, str], demo: Demo) -> Demo:
    """``demo`` with an active card client: the saved one, else a new one."""
    if (
        demo.card_client_id is not None
        and demo.card_client_secret is not None
        and _card_client_active(env, demo.card_client_id)
    ):
        return demo
    created = _admin(
        [
            "oauth-client",
            "create",
            "--merchant",
            demo.merchant_id,
            "--mode",
            "test",
            "--scope",
            CARD_SCOPES,
            "--label",
            CARD_CLIENT_LABEL,
        ],
        env,
    )
    return replace(
        demo,
        card_client_id=str(created["client_id"]),
        card_client_secret=str(created["client_secret"]),
    )


def load_demo(workdir: Path) -> Demo | None:
    """What the last ``seed`` in ``workdir`` saved (None before the first)."""
    try:
        return Demo.from_json(json.loads((workdir / DEMO_FILE).read_text()))
    except FileNotFoundError:
        return None


def _save(workdir: Path, demo: Demo) -> None:
    path = workdir / DEMO_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(demo.to_json(), out)
    os.chmod(path, 0o600)  # a file an older make dev wrote keeps its mode otherwise


def seed(workdir: Path, env: Mapping[str, str]) -> Demo:
    """Create the demo merchant and its card client once; return them with their secrets."""
    saved = load_demo(workdir)
    exists = _merchant_exists(env, DEMO_MERCHANT)
    if saved is not None and exists:
        demo = _card_client(env, saved)
        if demo != saved:
            _save(workdir, demo)
        return demo
    if not exists:
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
    demo = _card_client(env, Demo(DEMO_MERCHANT, str(created["key"])))
    _save(workdir, demo)
    return demo
