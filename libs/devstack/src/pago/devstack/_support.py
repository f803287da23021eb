"""Shared helpers: where things live on disk, free ports, and stopping child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent


class DevStackError(RuntimeError):
    """A part of the dev stack could not start, or is misconfigured."""


def environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """The environment to read settings from (``os.environ`` unless a test passes its own)."""
    return os.environ if env is None else env


def repo_root() -> Path | None:
    """The monorepo root (holds ``libs/devstack``), searched from this file, then from the cwd.

    None when the package runs from an installed wheel outside any checkout.
    """
    for start in (PACKAGE_DIR, Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "libs" / "devstack" / "pyproject.toml").is_file():
                return candidate
    return None


def node_modules_dir(required: str, env: Mapping[str, str] | None = None) -> Path:
    """The ``node_modules`` directory that holds the npm package ``required``.

    ``PAGO_NODE_MODULES`` wins; otherwise walk up from the repo root (or the cwd).
    """
    override = environ(env).get("PAGO_NODE_MODULES")
    if override:
        path = Path(override).expanduser().resolve()
        if not (path / required).exists():
            raise DevStackError(f"PAGO_NODE_MODULES={override} has no {required}")
        return path
    start = repo_root() or Path.cwd().resolve()
    for candidate in (start, *start.parents):
        if (candidate / "node_modules" / required).exists():
            return candidate / "node_modules"
    raise DevStackError(
        f"npm package {required} not found in any node_modules above {start}; "
        "run `make install` (npm install) or set PAGO_NODE_MODULES"
    )


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """A per-user cache that outlives work dirs (compiled contracts), so tmp stacks reuse it."""
    e = environ(env)
    if e.get("PAGO_DEVSTACK_CACHE"):
        path = Path(e["PAGO_DEVSTACK_CACHE"]).expanduser()
    else:
        base = Path(e["XDG_CACHE_HOME"]) if e.get("XDG_CACHE_HOME") else Path.home() / ".cache"
        path = base / "pago-devstack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_executable(env: Mapping[str, str] | None = None) -> str:
    return environ(env).get("PAGO_NODE", "node")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago; callers retry if a race takes it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(
    proc: subprocess.Popen[Any] | None,
    timeout: float = 5.0,
    drain: threading.Thread | None = None,
) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps the child so no zombie is left.

    ``drain`` (the thread reading the child's stdout) is joined before the pipes are closed:
    closing a descriptor another thread is blocked reading is a use-after-close race.
    """
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if drain is not None:
        drain.join(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def drain_in_thread(
    stream: IO[bytes], sink: Path | None, name: str, prefix: bytes = b""
) -> threading.Thread:
    """Copy a child's stdout to ``sink`` (or nowhere) until EOF.

    A child that writes to a full pipe blocks forever (anvil logs every request), so once we
    stop reading its startup lines someone must keep reading.
    """

    def pump() -> None:
        out = sink.open("ab") if sink is not None else None
        if out is not None:
            out.write(prefix)  # what the caller already read (e.g. the startup banner)
        fd = stream.fileno()
        try:
            for chunk in iter(lambda: os.read(fd, 65536), b""):
                if out is not None:
                    out.write(chunk)
                    out.flush()
        except (OSError, ValueError):
            pass  # the stream was closed under us at shutdown
        finally:
            if out is not None:
                out.close()

    thread = threading.Thread(target=pump, name=f"devstack-drain-{name}", daemon=True)
    thread.start()
    return thread


def process_alive(proc: Any) -> bool:
    """True while a ``psutil.Process`` runs; a zombie counts as gone.

    Postgres daemonizes, so its parent is PID 1, and a container's PID 1 may reap late (here
    it does): a stopped postmaster lingers as a zombie that ``is_running()`` reports as alive.
    """
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def terminate_and_wait(proc: Any, timeout: float = 5.0) -> None:
    """SIGTERM a ``psutil.Process`` that may not be our child, then SIGKILL if it lingers.

    Polls ``process_alive`` rather than psutil's ``wait()``, which for a non-child waits for
    the pid to vanish and so also for a lazy PID 1 to reap the zombie.
    """
    import psutil  # type: ignore[import-untyped, unused-ignore]

    for send in (proc.terminate, proc.kill):
        try:
            send()
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + timeout
        while process_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not process_alive(proc):
            return


def run_coroutine_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when the caller's thread has a loop.

    The devstack API is sync (fixtures, `make dev`), but async tests call it too; a private
    thread with its own loop never clashes with the caller's running loop.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="devstack-async", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DevStackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def venv_command(name: str) -> str:
    """The console script ``name`` beside this interpreter (the venv need not be on PATH)."""
    import shutil
    import sys

    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DevStackError(f"{name} is not installed (run `make install`)")
    return found
