"""The whole dev stack: Postgres, Redis, Kafka, anvil and Surfpool, started and stopped as one.

``DevStack`` is what ``make dev`` and the integration tests use::

    with DevStack(workdir=tmp_path, solana=False) as stack:
        stack.database_url, stack.redis_url, stack.kafka_bootstrap_servers, stack.anvil_node...

Each part honours its env var (``DATABASE_URL``, ``REDIS_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``PAGO_DEV_EVM_RPC_URL``, ``PAGO_DEV_SOLANA_RPC_URL``) and then starts nothing. While running,
``<workdir>/stack.json`` describes the endpoints for other commands (``pago-dev pay``).

Invariant: ``stop()`` leaves no process the stack started, whether ``start()`` finished, failed
halfway or was interrupted. The child pids are also kept in ``<workdir>/pids.json`` so the next
start on the same work dir kills what a SIGKILLed predecessor left behind (and refuses to start
while the stack that owns the work dir still runs).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped, unused-ignore]

from pago.devstack._support import (
    DevStackError,
    environ,
    process_alive,
    repo_root,
    terminate_and_wait,
)
from pago.devstack.anvil import Anvil
from pago.devstack.cardproviders.server import CardProviderServer
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database, PostgresServer
from pago.devstack.redis_server import RedisServer
from pago.devstack.surfpool import Surfpool

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"
PIDS_FILE = "pids.json"
DEFAULT_DATABASE = "pago"
_PARTS = ("kafka", "cards", "postgres", "redis", "anvil", "solana")
"""Start order (Kafka and the card providers are in-process and instant, so they go first);
``stop()`` reverses it."""


class _Closable(Protocol):
    def close(self) -> None: ...


def default_workdir(env: Mapping[str, str] | None = None) -> Path:
    """``PAGO_DEVSTACK_DIR``, else ``.devstack/`` in the repo root (else in the cwd)."""
    override = environ(env).get("PAGO_DEVSTACK_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return (repo_root() or Path.cwd().resolve()) / ".devstack"


@dataclass
class DevStack:
    """Start the selected parts (``start()``/``__enter__``), expose endpoints, ``stop()`` all."""

    workdir: Path | str | None = None
    """Logs, Postgres data, ``stack.json``; default: ``default_workdir()``."""
    postgres: bool = True
    redis: bool = True
    kafka: bool = True
    anvil: bool = True
    solana: bool = True
    anvil_block_time: float | None = None
    kafka_brokers: int = 1
    card_providers: bool = False
    """Run the local card-provider server (Stripe, Adyen, PayPal fakes) on a free port."""
    card_webhook_base_url: str | None = None
    """Pago's api base URL, where the card providers send their webhooks
    (``/api/v1/webhooks/<provider>``); None: they send none."""
    database_name: str | None = DEFAULT_DATABASE
    """Created on the embedded Postgres (if missing) and used in ``database_url``; None uses
    the server's default database. An external ``DATABASE_URL`` is used as given."""
    parallel: bool = True
    """Start Postgres, Redis, anvil and Surfpool on threads at once (they mostly wait)."""
    env: Mapping[str, str] | None = None
    """Environment to read the override variables from; None means ``os.environ``."""

    postgres_server: PostgresServer | None = field(init=False, default=None)
    redis_server: RedisServer | None = field(init=False, default=None)
    kafka_server: KafkaServer | None = field(init=False, default=None)
    anvil_node: Anvil | None = field(init=False, default=None)
    surfpool_node: Surfpool | None = field(init=False, default=None)
    card_provider_server: CardProviderServer | None = field(init=False, default=None)
    timings: dict[str, float] = field(init=False, default_factory=dict)
    """Seconds each part took to start."""

    database: Database | None = field(init=False, default=None)
    """The stack's database (both URL forms) once Postgres is up."""
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)
    _pending: list[concurrent.futures.Future[None]] = field(
        init=False, default_factory=list, repr=False
    )
    _pids: list[dict[str, Any]] = field(init=False, default_factory=list, repr=False)
    _running: bool = field(init=False, default=False, repr=False)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._running:
            raise DevStackError("dev stack already started")
        self.workdir = wd = Path(self.workdir or default_workdir(self.env)).resolve()
        wd.mkdir(parents=True, exist_ok=True)
        reap_leftovers(wd)
        self._running = True
        # A normal interpreter exit (an uncaught exception in `make dev`) still stops the
        # children; SIGKILL cannot be caught, and reap_leftovers() covers it next time.
        atexit.register(self.stop)
        started = time.monotonic()
        try:
            if self.kafka:
                self._start_part("kafka", self._start_kafka)
            if self.card_providers:
                self._start_part("cards", self._start_card_providers)
            slow = {
                "postgres": self._start_postgres,
                "redis": self._start_redis,
                "anvil": self._start_anvil,
                "solana": self._start_solana,
            }
            chosen = {name: fn for name, fn in slow.items() if getattr(self, name)}
            if self.parallel and len(chosen) > 1:
                self._start_parallel(chosen)
            else:
                for name, fn in chosen.items():
                    self._start_part(name, fn)
            self._write_stack_file()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        log.info("dev stack up in %.2f s: %s", self.timings["total"], self.timings)
        return self

    def _start_parallel(self, chosen: Mapping[str, Callable[[], None]]) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(chosen), thread_name_prefix="devstack-start"
        )
        try:
            # Kept on self: stop() must wait for a part still starting before it can close it.
            self._pending = [pool.submit(self._start_part, n, fn) for n, fn in chosen.items()]
            concurrent.futures.wait(self._pending)
        finally:
            pool.shutdown(wait=False)
        errors = [exc for f in self._pending if (exc := f.exception()) is not None]
        self._pending = []
        if errors:
            for extra in errors[1:]:
                log.error("another part failed to start too: %r", extra)
            raise errors[0]

    def _start_part(self, name: str, start: Callable[[], None]) -> None:
        began = time.monotonic()
        start()
        with self._lock:
            self.timings[name] = time.monotonic() - began

    def _start_kafka(self) -> None:
        self.kafka_server = KafkaServer.start(self.kafka_brokers, env=self.env)

    def _start_card_providers(self) -> None:
        server = CardProviderServer(webhook_base_url=self.card_webhook_base_url)
        self.card_provider_server = server.start()

    @property
    def _wd(self) -> Path:
        if self.workdir is None:
            raise DevStackError("dev stack has no work dir before start()")
        return Path(self.workdir)

    def _start_postgres(self) -> None:
        self.postgres_server = server = PostgresServer.start(self._wd / "pgdata", env=self.env)
        self._record_pid("postgres", server.pid)
        if server.external or self.database_name is None:
            name = urlsplit(server.libpq_url).path.lstrip("/") or "postgres"
            self.database = Database(name=name, url=server.url, libpq_url=server.libpq_url)
        else:
            self.database = server.create_database(self.database_name, exist_ok=True)

    def _start_redis(self) -> None:
        self.redis_server = server = RedisServer.start(self._wd, env=self.env)
        self._record_pid("redis", server.pid)

    def _start_anvil(self) -> None:
        self.anvil_node = node = Anvil.start(
            self._wd, block_time=self.anvil_block_time, env=self.env
        )
        self._record_pid("anvil", node.pid)

    def _start_solana(self) -> None:
        self.surfpool_node = node = Surfpool.start(self._wd, env=self.env)
        self._record_pid("solana", node.pid)

    def stop(self) -> None:
        """Stop every part in reverse start order; idempotent; never leaves a child running."""
        if self._pending:
            # Parts still starting (start() was interrupted): let them finish so that what
            # they started is assigned to self and can be closed below.
            with contextlib.suppress(BaseException):
                concurrent.futures.wait(self._pending)
            self._pending = []
        attrs = {
            "kafka": "kafka_server",
            "cards": "card_provider_server",
            "postgres": "postgres_server",
            "redis": "redis_server",
            "anvil": "anvil_node",
            "solana": "surfpool_node",
        }
        for name in reversed(_PARTS):
            part: _Closable | None = getattr(self, attrs[name])
            setattr(self, attrs[name], None)
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                log.exception("stopping %s failed", name)
        if self.workdir is not None:
            for filename in (STACK_FILE, PIDS_FILE):
                (self._wd / filename).unlink(missing_ok=True)
        self._pids = []
        self.database = None
        self._running = False
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- endpoints -------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """``postgresql+asyncpg://…`` of the stack's database."""
        if self.database is None:
            raise DevStackError("Postgres is not part of this running stack")
        return self.database.url

    @property
    def redis_url(self) -> str:
        if self.redis_server is None:
            raise DevStackError("Redis is not part of this running stack")
        return self.redis_server.url

    @property
    def kafka_bootstrap_servers(self) -> str:
        if self.kafka_server is None:
            raise DevStackError("Kafka is not part of this running stack")
        return self.kafka_server.bootstrap_servers

    def child_pids(self) -> list[int]:
        """Pids of the processes this stack started (external servers have none)."""
        return [int(entry["pid"]) for entry in self._pids]

    def env_vars(self) -> dict[str, str]:
        """The environment a service (or another DevStack) needs to use this stack.

        The same variables the parts read, so a child ``DevStack`` given them starts nothing.
        """
        env: dict[str, str] = {}
        if self.database is not None:
            env["DATABASE_URL"] = self.database.url
        if self.redis_server is not None:
            env["REDIS_URL"] = self.redis_server.url
        if self.kafka_server is not None:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_server.bootstrap_servers
        if self.anvil_node is not None:
            env["PAGO_DEV_EVM_RPC_URL"] = self.anvil_node.rpc_url
            env["PAGO_DEV_EVM_WS_URL"] = self.anvil_node.ws_url
            for symbol, address in self.anvil_node.tokens.items():
                env[f"PAGO_DEV_EVM_{symbol}"] = address
            env["PAGO_DEV_EVM_PAYER_KEYS"] = ",".join(k for _, k in self.anvil_node.payers)
        if (cards := self.card_provider_server) is not None:
            env.update(cards.env_vars())
            # The api enables no provider by default: without this it would know the local
            # providers' URLs and credentials and still route no card session to them.
            env["PAGO_CARD_ENABLED_PROVIDERS"] = ",".join(sorted(cards.contexts))
        if self.surfpool_node is not None:
            env["PAGO_DEV_SOLANA_RPC_URL"] = self.surfpool_node.rpc_url
            env["PAGO_DEV_SOLANA_WS_URL"] = self.surfpool_node.ws_url
            for symbol, mint in self.surfpool_node.mints.items():
                env[f"PAGO_DEV_SOLANA_{symbol}"] = mint
            if self.surfpool_node.payer is not None:
                env["PAGO_DEV_SOLANA_PAYER_KEY"] = str(self.surfpool_node.payer)
        return env

    def describe(self) -> dict[str, Any]:
        """What ``stack.json`` holds: endpoints, token addresses, payers (dev keys only)."""
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "workdir": str(self.workdir),
            "env": self.env_vars(),
        }
        if self.postgres_server is not None and self.database is not None:
            info["postgres"] = {
                "url": self.database.url,
                "libpq_url": self.database.libpq_url,
                "external": self.postgres_server.external,
            }
        if self.redis_server is not None:
            info["redis"] = {"url": self.redis_server.url, "external": self.redis_server.external}
        if self.kafka_server is not None:
            info["kafka"] = {
                "bootstrap_servers": self.kafka_server.bootstrap_servers,
                "external": self.kafka_server.external,
            }
        if self.card_provider_server is not None:
            cards = self.card_provider_server
            info["card_providers"] = {
                "url": cards.base_url,
                "providers": {name: cards.url(name) for name in cards.contexts},
                "webhook_base_url": self.card_webhook_base_url,
            }
        if self.anvil_node is not None:
            node = self.anvil_node
            info["evm"] = {
                "rpc_url": node.rpc_url,
                "ws_url": node.ws_url,
                "chain_id": node.chain_id,
                "tokens": node.tokens,
                "decimals": 6,
                "payers": [{"address": a, "private_key": k} for a, k in node.payers],
                "external": node.external,
            }
        if self.surfpool_node is not None:
            sol = self.surfpool_node
            info["solana"] = {
                "rpc_url": sol.rpc_url,
                "ws_url": sol.ws_url,
                "genesis_hash": sol.genesis_hash,
                "mints": sol.mints,
                "decimals": 6,
                "payer": (
                    {"pubkey": str(sol.payer.pubkey()), "secret_key": list(bytes(sol.payer))}
                    if sol.payer is not None
                    else None
                ),
                "external": sol.external,
            }
        return info

    # -- files -----------------------------------------------------------------------------

    def _record_pid(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        try:
            create_time = float(psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._pids.append({"name": name, "pid": pid, "create_time": create_time})
            me = psutil.Process()
            owner = {"pid": me.pid, "create_time": float(me.create_time())}
            _write_json(self._wd / PIDS_FILE, {"owner": owner, "children": self._pids})

    def _write_stack_file(self) -> None:
        # 0600: it holds payer keys (well-known dev keys, or ones the user configured).
        _write_json(self._wd / STACK_FILE, self.describe())


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    tmp.replace(path)  # readers see the old or the new file, never half of one


def reap_leftovers(workdir: Path) -> list[int]:
    """Kill processes a previous stack in ``workdir`` started and never stopped (SIGKILL).

    Refuses while the stack that wrote ``pids.json`` still runs: two stacks must not share a
    work dir. A pid counts only if its start time matches the record, so a reused pid is left
    alone. The embedded Postgres is skipped: pgserver adopts a server still running on its
    data dir (and the new stack stops it at the end).
    """
    path = workdir / PIDS_FILE
    try:
        record = json.loads(path.read_text())
        owner, children = record["owner"], record["children"]
    except (OSError, ValueError, TypeError, KeyError):
        return []
    if _same_process(owner):
        raise DevStackError(f"a dev stack (pid {owner['pid']}) is already running in {workdir}")
    killed: list[int] = []
    for entry in children if isinstance(children, list) else []:
        if not isinstance(entry, dict) or entry.get("name") == "postgres":
            continue
        if not _same_process(entry):
            continue
        proc = psutil.Process(int(entry["pid"]))
        terminate_and_wait(proc)
        killed.append(proc.pid)
        log.warning("killed %s (pid %s) left by an earlier dev stack", entry.get("name"), proc.pid)
    path.unlink(missing_ok=True)
    return killed


def _same_process(entry: Any) -> bool:
    """True if ``{"pid", "create_time"}`` names a live process (not a reused pid)."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        same = abs(float(proc.create_time()) - float(entry["create_time"])) < 0.5
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False
    return same and process_alive(proc)


def load_stack_info(workdir: Path | str | None = None) -> dict[str, Any]:
    """Read ``stack.json`` of a running stack (``pago-dev pay`` finds anvil and Surfpool here)."""
    wd = Path(workdir) if workdir is not None else default_workdir()
    try:
        info: dict[str, Any] = json.loads((wd / STACK_FILE).read_text())
    except FileNotFoundError:
        raise DevStackError(f"no running dev stack in {wd} (start one with `make dev`)") from None
    if not psutil.pid_exists(int(info.get("pid", -1))):
        raise DevStackError(f"the dev stack in {wd} is not running (stale {STACK_FILE})")
    return info
