"""The whole DevStack: starts every part, describes them in stack.json, and leaves no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from pago.devstack import DevStack, DevStackError, load_stack_info
from pago.devstack.postgres import effective_datadir
from pago.devstack.redis_server import ping
from pago.devstack.stack import PIDS_FILE, STACK_FILE, reap_leftovers


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for PID 1 (postgres daemonizes, so PID 1 is its parent)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _live_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if not _gone(p.pid)}


def _processes_using(workdir: Path) -> list[int]:
    """Live processes whose command line names the work dir or its Postgres data dir
    (postgres -D, redis --logfile); postgres daemonizes, so it is nobody's child."""
    paths = (str(workdir), str(effective_datadir(workdir / "pgdata")))
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(p in cmdline for p in paths) and proc.pid != os.getpid() and not _gone(proc.pid):
            found.append(proc.pid)
    return found


def test_full_stack_starts_describes_itself_and_stops_clean(tmp_path: Path) -> None:
    before = _live_children()
    stack = DevStack(workdir=tmp_path, env={})
    with stack:
        pids = stack.child_pids()
        assert len(pids) == 4  # postgres, redis, anvil, surfpool's node host
        assert all(not _gone(pid) for pid in pids)
        assert set(stack.timings) >= {"postgres", "redis", "kafka", "anvil", "solana", "total"}

        info = load_stack_info(tmp_path)
        assert info["postgres"]["url"] == stack.database_url
        assert info["postgres"]["url"].startswith("postgresql+asyncpg://")
        assert info["postgres"]["url"].split("?")[0].endswith("/pago")
        assert info["redis"]["url"] == stack.redis_url
        assert info["kafka"]["bootstrap_servers"] == stack.kafka_bootstrap_servers
        assert set(info["evm"]["tokens"]) == {"USDT", "USDC"}
        assert info["evm"]["chain_id"] == 31337
        assert len(info["evm"]["payers"]) == 10
        assert set(info["solana"]["mints"]) == {"USDT", "USDC"}
        assert len(info["solana"]["payer"]["secret_key"]) == 64
        assert (tmp_path / STACK_FILE).stat().st_mode & 0o077 == 0  # holds keys

        assert stack.redis_server is not None
        assert stack.redis_server.port is not None
        assert ping("127.0.0.1", stack.redis_server.port)
        assert stack.anvil_node is not None
        assert stack.anvil_node.web3.eth.block_number >= 2

        # Its env vars make a second stack use this one's servers and start nothing.
        with DevStack(workdir=tmp_path / "second", env=stack.env_vars()) as second:
            assert second.child_pids() == []
            assert second.database_url == stack.database_url
            assert second.anvil_node is not None
            assert second.anvil_node.external
            assert second.anvil_node.tokens == stack.anvil_node.tokens
            assert second.surfpool_node is not None
            assert second.surfpool_node.external
            assert second.kafka_server is not None
            assert second.kafka_server.external

    assert all(_gone(pid) for pid in pids)
    assert _live_children() <= before
    assert _processes_using(tmp_path) == []
    assert not (tmp_path / STACK_FILE).exists()
    assert not (tmp_path / PIDS_FILE).exists()
    with pytest.raises(DevStackError, match="no running dev stack"):
        load_stack_info(tmp_path)


def test_start_failing_halfway_leaves_no_process(tmp_path: Path) -> None:
    before = _live_children()
    # Solana fails (external RPC without mints) while the other parts start on threads.
    stack = DevStack(workdir=tmp_path, env={"PAGO_DEV_SOLANA_RPC_URL": "http://127.0.0.1:9"})
    with pytest.raises(DevStackError, match="PAGO_DEV_SOLANA_USDT"):
        stack.start()
    assert stack.postgres_server is None
    assert stack.anvil_node is None
    assert _live_children() <= before
    assert _processes_using(tmp_path) == []
    assert not (tmp_path / STACK_FILE).exists()


@pytest.mark.slow
def test_children_of_a_killed_stack_are_reaped_by_the_next_start(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pago.devstack import DevStack
        stack = DevStack(workdir={str(tmp_path)!r}, postgres=False, kafka=False, solana=False,
                         env={{}}).start()
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        record = json.loads((tmp_path / PIDS_FILE).read_text())
        assert record["owner"]["pid"] == proc.pid
        orphans = [entry["pid"] for entry in record["children"]]
        assert len(orphans) == 2  # redis, anvil
        with pytest.raises(DevStackError, match="already running"):
            DevStack(workdir=tmp_path, postgres=False, anvil=False, solana=False).start()

        proc.send_signal(signal.SIGKILL)  # no atexit, no cleanup: the children outlive it
        proc.wait(10)
        assert all(not _gone(pid) for pid in orphans)

        assert sorted(reap_leftovers(tmp_path)) == sorted(orphans)
        assert all(_gone(pid) for pid in orphans)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
