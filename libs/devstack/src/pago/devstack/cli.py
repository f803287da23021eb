"""``pago-dev``: run the whole system on the embedded stack, and pay its sessions.

pago-dev up                 # stack + migrations + demo merchant + every service; Ctrl-C stops
pago-dev pay cs_… [10.5]    # a real token transfer to the session's deposit address
pago-dev env                # print the running stack's environment as shell exports
                            # (with the demo card client: PAGO_DEV_CARD_CLIENT_ID/_SECRET)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pago.common.db.migrate import upgrade
from pago.common.money import MoneyError, format_units, parse_units
from pago.devstack._support import DevStackError, repo_root, venv_command
from pago.devstack.seed import CARD_SESSION_EXAMPLE, POOL_KEYS_DIR, Demo, load_demo, seed
from pago.devstack.stack import DevStack, load_stack_info

log = logging.getLogger("pago.devstack")

DEFAULT_API_PORT = 8000
CHAINS_FILE = "chains.toml"
SHARED_AML = Path("../shared/data/aml")
EVM_CONFIRMATIONS = 2


def _chains_override(stack: DevStack) -> str:
    """The registry override that maps ETHEREUM and SOLANA test mode onto the local chains."""
    lines: list[str] = []
    if stack.anvil_node is not None:
        node = stack.anvil_node
        lines += [
            "[networks.ETHEREUM.test]",
            'name = "anvil (make dev)"',
            f"chain_id = {node.chain_id}",
            f"confirmations = {EVM_CONFIRMATIONS}",
            f"rpc_urls = [{node.rpc_url!r}]",
            # The session object offers the local node to a checkout page (detection_rpc_url).
            f"detection_rpc_url = {node.rpc_url!r}",
        ]
        for symbol, address in node.tokens.items():
            lines += [
                f"[networks.ETHEREUM.test.tokens.{symbol}]",
                f'contract = "{address}"',
                "decimals = 6",
            ]
    if stack.surfpool_node is not None:
        sol = stack.surfpool_node
        lines += [
            "[networks.SOLANA.test]",
            'name = "Surfpool (make dev)"',
            f'genesis_hash = "{sol.genesis_hash}"',
            f"rpc_urls = [{sol.rpc_url!r}]",
            f"detection_rpc_url = {sol.rpc_url!r}",
        ]
        for symbol, mint in sol.mints.items():
            lines += [
                f"[networks.SOLANA.test.tokens.{symbol}]",
                f'contract = "{mint}"',
                "decimals = 6",
            ]
    return "\n".join(lines) + "\n"


def _services(api_port: int) -> list[tuple[str, list[str]]]:
    """Every service that exists in this checkout, with its command line."""
    candidates = [
        ("api", "pago.api.main", ["pago-api", "--port", str(api_port)]),
        ("matcher", "pago.matcher.main", ["pago-matcher"]),
        ("notifier", "pago.notifier.main", ["pago-notifier"]),
        # Each watcher its own health port: the notifier has 8083, the watcher's default.
        (
            "watcher-ethereum",
            "pago.watcher.main",
            ["pago-watcher", "--network", "ETHEREUM", "--mode", "test", "--http-port", "8084"],
        ),
        (
            "watcher-solana",
            "pago.watcher.main",
            ["pago-watcher", "--network", "SOLANA", "--mode", "test", "--http-port", "8085"],
        ),
    ]
    found = []
    for name, module, argv in candidates:
        with contextlib.suppress(ModuleNotFoundError):
            if importlib.util.find_spec(module) is not None:
                found.append((name, argv))
    return found


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(
                f"{proc.args!r} exited with {proc.returncode} before {url} answered"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310 - local URL
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise DevStackError(f"{url} did not answer within {timeout:.0f} s")


def up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="pago-dev: %(message)s")
    for noisy in ("pgserver", "web3", "urllib3", "asyncio", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stack = DevStack(
        anvil_block_time=args.block_time,
        card_providers=True,
        card_webhook_base_url=f"http://127.0.0.1:{args.api_port}",
    )
    try:
        stack.start()
        workdir = Path(stack.workdir or ".")
        chains = workdir / CHAINS_FILE
        chains.write_text(_chains_override(stack))
        env: dict[str, str] = {
            **os.environ,
            **stack.env_vars(),
            "PAGO_ENV": "development",
            "PAGO_CHAINS_FILE": str(chains),
            "PAGO_CHECKOUT_BASE_URL": f"http://localhost:{args.api_port}/checkout/",
            # Development pools refill themselves with generated keys; their secrets stay here
            # (never in the database) so test payments to them can be swept.
            "PAGO_DEV_POOL_KEYS_DIR": str(workdir / POOL_KEYS_DIR),
        }
        aml = (repo_root() or Path.cwd()) / SHARED_AML
        if aml.is_dir():
            env.setdefault("PAGO_AML_LIST_PATH", str(aml.resolve()))
        upgrade(stack.database_url)
        demo = seed(workdir, env)
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        for name, argv in [] if args.no_services else _services(args.api_port):
            out = (logs / f"{name}.log").open("ab")
            # A session of its own: Ctrl-C reaches pago-dev only, which then stops the services
            # first and the servers after them.
            proc = subprocess.Popen(
                [venv_command(argv[0]), *argv[1:]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.append((name, proc))
            log.info("started %s (pid %s), log in %s", name, proc.pid, logs / f"{name}.log")
        api = dict(procs).get("api")
        if api is not None:
            _wait_http(f"http://127.0.0.1:{args.api_port}/healthz", 60, api)
        _banner(demo, stack, [n for n, _ in procs], args.api_port)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    log.error(
                        "%s exited with %s; see .devstack/logs/%s.log", name, proc.returncode, name
                    )
                    stopping = True
            time.sleep(0.5)
        return 0
    except DevStackError as exc:
        print(f"pago-dev: {exc}", file=sys.stderr)
        return 1
    finally:
        log.info("stopping")
        for _, proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within 15 s; killing it", name)
                proc.kill()
                proc.wait()
        stack.stop()
        log.info("stopped; nothing left running")


def card_walkthrough(demo: Demo, api_port: int) -> str:
    """How to take a card payment on the dev stack: a token, a session, the hosted page."""
    if demo.card_client_id is None or demo.card_client_secret is None:
        return ""
    host = f"localhost:{api_port}"
    token_curl = (
        'curl -s -u "$PAGO_DEV_CARD_CLIENT_ID:$PAGO_DEV_CARD_CLIENT_SECRET"'
        f" -d grant_type=client_credentials {host}/oauth/token"
    )
    # The seed's body verbatim (its JSON numbers stay as written), indented for the banner.
    body = CARD_SESSION_EXAMPLE.read_text().strip().replace("\n", "\n       ")
    return f"""
Card checkout (the demo merchant's OAuth client, test mode, sessions:write sessions:read):
  export PAGO_DEV_CARD_CLIENT_ID={demo.card_client_id}
  export PAGO_DEV_CARD_CLIENT_SECRET={demo.card_client_secret}
  {token_curl}
  export TOKEN=...                   # its access_token (good for expires_in seconds)
  curl -s {host}/api/v1/sessions -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -H "Idempotency-Key: $(date +%s)" \\
       -d '{body}'
  Open its checkoutUrl in a browser and click Pay (or Decline): the session turns COMPLETED
  (FAILED) in GET {host}/api/v1/sessions/<sessionId>, and your webhook endpoints
  (POST /v1/webhook_endpoints with the test key) get card_session.completed (.failed).
"""


def _banner(demo: Demo, stack: DevStack, services: list[str], api_port: int) -> None:
    base = f"http://localhost:{api_port}"
    key = demo.api_key
    eth = "anvil" if stack.anvil_node is not None else "off"
    sol = "Surfpool" if stack.surfpool_node is not None else "off"
    cards = "off"
    walkthrough = ""
    if stack.card_provider_server is not None:
        server = stack.card_provider_server
        names = ", ".join(sorted(server.contexts)) or "none"
        cards = (
            f"{names} on {server.base_url} (webhooks to {base}/api/v1/webhooks/<provider>;"
            f" failures: POST {server.base_url}/_control/<provider>)"
        )
        walkthrough = card_walkthrough(demo, api_port)
    card_client = f"\n  Card client  {demo.card_client_id}" if demo.card_client_id else ""
    print(
        f"""
Pago is running: {", ".join(services) or "no services"}
Local chains: ETHEREUM test mode on {eth}, SOLANA test mode on {sol}.
Card providers: {cards}

  API          {base}        (docs: {base}/docs)
  Test key     {key}{card_client}

Try:
  export KEY={key}
  curl -s {base}/v1/checkout/sessions -H "Authorization: Bearer $KEY" \\
       -H 'Content-Type: application/json' \\
       -d '{{"pricing_amount": "10", "pricing_currency": "USDT",
            "currency": "USDT", "network": "ETHEREUM"}}'
  make pay SESSION=cs_...            # a real USDT transfer on the local chain
  curl -s {base}/v1/checkout/sessions/cs_... -H "Authorization: Bearer $KEY"
{walkthrough}
Ctrl-C stops everything.
""",
        flush=True,
    )


async def _session(libpq_url: str, session_id: str) -> Mapping[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(libpq_url)
    try:
        row = await conn.fetchrow(
            "SELECT network, currency, pay_address, decimals, amount_expected, amount_received"
            " FROM checkout_sessions WHERE id = $1",
            session_id,
        )
    finally:
        await conn.close()
    if row is None:
        raise DevStackError(f"no session {session_id} in the dev database")
    return dict(row)


def pay(args: argparse.Namespace) -> int:
    try:
        info = load_stack_info()
        session = asyncio.run(_session(info["postgres"]["libpq_url"], args.session))
        decimals = int(session["decimals"])
        if args.amount:
            units = parse_units(args.amount, decimals)
        else:
            units = int(session["amount_expected"]) - int(session["amount_received"])
            if units <= 0:
                raise DevStackError(f"{args.session} owes nothing; give an amount to pay anyway")
        env = {**os.environ, **info["env"]}
        symbol, address, network = session["currency"], session["pay_address"], session["network"]
        if network == "ETHEREUM" and "evm" in info:
            from pago.devstack.anvil import Anvil

            node = Anvil.start(env=env)
            try:
                tx = node.transfer(symbol, 1, address, units)
            finally:
                node.close()
        elif network == "SOLANA" and "solana" in info:
            from pago.devstack.surfpool import Surfpool

            sol = Surfpool.start(env=env)
            try:
                tx = sol.transfer(symbol, address, units)
            finally:
                sol.close()
        else:
            raise DevStackError(
                f"{network} has no local chain in make dev; drive it with "
                f"POST /v1/test_helpers/checkout/sessions/{args.session}/transfers"
            )
    except (DevStackError, MoneyError) as exc:
        print(f"pago-dev: {exc}", file=sys.stderr)
        return 1
    print(f"sent {format_units(units, decimals)} {symbol} to {address} on {network}: {tx}")
    return 0


def env_cmd(_: argparse.Namespace) -> int:
    try:
        info = load_stack_info()
    except DevStackError as exc:
        print(f"pago-dev: {exc}", file=sys.stderr)
        return 1
    exports = dict(info["env"])
    demo = load_demo(Path(info["workdir"]))
    if demo is not None and demo.card_client_id and demo.card_client_secret:
        exports["PAGO_DEV_CARD_CLIENT_ID"] = demo.card_client_id
        exports["PAGO_DEV_CARD_CLIENT_SECRET"] = demo.card_client_secret
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(str(value))}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pago-dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="run the whole system on the embedded stack")
    p_up.add_argument("--block-time", type=float, default=1.0, help="anvil block time in seconds")
    p_up.add_argument("--no-services", action="store_true", help="servers and seed only")
    p_up.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    p_up.set_defaults(func=up)
    p_pay = sub.add_parser("pay", help="pay a session with a real transfer on the local chain")
    p_pay.add_argument("session", help="checkout session id (cs_…)")
    p_pay.add_argument("amount", nargs="?", help="decimal amount (default: what is still due)")
    p_pay.set_defaults(func=pay)
    sub.add_parser("env", help="print the running stack's environment").set_defaults(func=env_cmd)
    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))
