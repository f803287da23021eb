"""``pago-watcher``'s start-up contract: one clear line and exit 2 when misconfigured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import module, run_to_exit


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PAGO_") and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    return run_to_exit(module("pago.watcher", *args), {**base, **env}, timeout=30)


def test_a_missing_setting_is_named_and_no_database_is_asked_for() -> None:
    result = _run(["--network", "BASE", "--mode", "live"], REDIS_URL="redis://127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pago-watcher: missing required setting KAFKA_BOOTSTRAP_SERVERS"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "BASE", "--mode", "test", "--rpc-url", "http://x"], "no such file"),
        (["--network", "BASE", "--mode", "live"], "no RPC endpoint"),
        (["--mode", "live"], "missing required setting --network"),
    ],
)
def test_what_cannot_run_says_why(args: list[str], message: str, tmp_path: Path) -> None:
    chains = {"PAGO_CHAINS_FILE": str(tmp_path / "nope.toml")} if "--rpc-url" in args else {}
    result = _run(
        args, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", REDIS_URL="redis://127.0.0.1:1", **chains
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
