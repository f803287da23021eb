"""A Solana chain for dev and tests: Surfpool's simnet with 6-decimal test USDT/USDC mints.

Embedded: ``js/surfpool_host.js`` loads npm ``@solana/surfpool-linux-x64-gnu`` in node, starts a
surfnet (offline, dynamic ports) and prints its URLs and funded payer as one JSON line; it stops
the surfnet when its stdin closes, so it dies with the Python process that owns the pipe. Then
two SPL Token mints (6 decimals) are created with solana-py, and the payer's ATA of each gets a
balance. Cheat codes (``fundToken``, ``setTokenBalance``, ...) run in node via ``cheat()``.

External (``PAGO_DEV_SOLANA_RPC_URL``): mints from ``PAGO_DEV_SOLANA_USDT`` and
``PAGO_DEV_SOLANA_USDC``; the payer, if any, from ``PAGO_DEV_SOLANA_PAYER_KEY`` (base58 or a JSON
array of the 64 secret-key bytes); ``PAGO_DEV_SOLANA_WS_URL`` (default: port + 1, Solana's
convention).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams, TransferCheckedParams

from pago.devstack._support import (
    PACKAGE_DIR,
    DevStackError,
    environ,
    node_executable,
    node_modules_dir,
    run_coroutine_sync,
    stop_process,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_DECIMALS = 6
TOKEN_SYMBOLS = ("USDT", "USDC")
DEFAULT_PAYER_BALANCE_UNITS = 1_000_000 * 10**TOKEN_DECIMALS  # one million tokens per mint
MINT_ACCOUNT_SIZE = 82  # spl_token::state::Mint::LEN
_SDK_PACKAGE = "@solana/surfpool-linux-x64-gnu"
_SDK_FILE = "surfpool-sdk.linux-x64-gnu.node"
_HOST_SCRIPT = PACKAGE_DIR / "js" / "surfpool_host.js"
_START_TIMEOUT = 20.0
_CONFIRM_TIMEOUT = 30.0
_CHEAT_TIMEOUT = 30.0


def find_surfpool_sdk(env: Mapping[str, str] | None = None) -> Path:
    return node_modules_dir(_SDK_PACKAGE, env) / _SDK_PACKAGE / _SDK_FILE


class _NodeHost:
    """The node child: one JSON hello line at start, then request/response lines by ``id``.

    A thread reads stdout for the child's whole life, so log lines the addon may print can
    never fill the pipe and stall it; lines that are neither go to the log.
    """

    def __init__(self, args: list[str], log_path: Path | None) -> None:
        self._log = log_path.open("ab") if log_path is not None else None
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
        )
        self._responses: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._hello: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._next_id = 0
        if self.proc.stdout is None:
            raise DevStackError("surfpool host was started without a stdout pipe")
        self._reader = threading.Thread(
            target=self._read_forever,
            args=(self.proc.stdout,),
            name="devstack-surfpool",
            daemon=True,
        )
        self._reader.start()

    def read_hello(self, timeout: float) -> dict[str, Any]:
        """The surfnet's URLs and payer, from the host's first JSON line."""
        try:
            hello = self._hello.get(timeout=timeout)
        except queue.Empty:
            raise DevStackError(f"surfpool did not start within {timeout:.0f} s") from None
        if hello is None:
            raise DevStackError(f"surfpool host exited ({self.proc.wait()}); see surfpool.log")
        return hello

    def _read_forever(self, stream: IO[bytes]) -> None:
        greeted = False
        for line in iter(stream.readline, b""):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                if not greeted and "rpcUrl" in message:
                    greeted = True
                    self._hello.put(message)
                    continue
                if isinstance(message.get("id"), int):
                    with self._lock:
                        waiter = self._responses.get(message["id"])
                    if waiter is not None:
                        waiter.put(message)
                        continue
            self._write_log(line)
        if not greeted:
            self._hello.put(None)  # EOF before the hello: the host died at start
        with self._lock:
            for waiter in self._responses.values():
                waiter.put({"error": "surfpool host exited"})

    def _write_log(self, line: bytes) -> None:
        if self._log is not None:
            try:
                self._log.write(line)
                self._log.flush()
            except ValueError:
                pass  # log closed during shutdown

    def request(self, method: str, params: Sequence[Any], timeout: float) -> Any:
        if self.proc.stdin is None or self.proc.poll() is not None:
            raise DevStackError("surfpool host is not running")
        waiter: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            self._responses[request_id] = waiter
            # Writes happen under the lock: two threads must not interleave one line.
            line = json.dumps({"id": request_id, "method": method, "params": list(params)})
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        try:
            response = waiter.get(timeout=timeout)
        except queue.Empty:
            raise DevStackError(f"surfpool {method} timed out after {timeout:.0f} s") from None
        finally:
            with self._lock:
                self._responses.pop(request_id, None)
        if "error" in response:
            raise DevStackError(f"surfpool {method}: {response['error']}")
        return response.get("result")

    def close(self) -> None:
        # Closing stdin is the host's signal to stop the surfnet and exit; SIGTERM (in
        # stop_process) is the fallback if it does not within the timeout.
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        stop_process(self.proc, drain=self._reader)
        if self._log is not None:
            self._log.close()


@dataclass
class Surfpool:
    """A Solana JSON-RPC node with test USDT/USDC mints (``mints``: symbol → base58 address).

    ``payer`` holds SOL and a balance of each mint in its associated token account.
    """

    rpc_url: str
    ws_url: str
    mints: dict[str, str]
    payer: Keypair | None
    external: bool
    genesis_hash: str = ""
    """``getGenesisHash``: a fresh surfnet has a new one each start (the watcher checks it)."""
    _host: _NodeHost | None = field(default=None, repr=False)
    _token_programs: dict[str, Pubkey] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int | None:
        return self._host.proc.pid if self._host is not None else None

    # -- start -----------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | str | None = None,
        *,
        payer_balance_units: int = DEFAULT_PAYER_BALANCE_UNITS,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Surfpool:
        """Use ``PAGO_DEV_SOLANA_RPC_URL`` if set; otherwise start a surfnet and create mints.

        ``config`` goes to ``Surfnet.startWithConfig`` (e.g. ``{"slotTimeMs": 100}``).
        ``workdir`` receives ``surfpool.log``; None discards the host's output.
        """
        e = environ(env)
        if e.get("PAGO_DEV_SOLANA_RPC_URL", "").strip():
            return cls._external(e)
        _check_units(payer_balance_units)
        wd = Path(workdir).resolve() if workdir is not None else None
        if wd is not None:
            wd.mkdir(parents=True, exist_ok=True)
        args = [node_executable(env), str(_HOST_SCRIPT), str(find_surfpool_sdk(env))]
        if config:
            args.append(json.dumps(dict(config)))
        host = _NodeHost(args, wd / "surfpool.log" if wd is not None else None)
        try:
            hello = host.read_hello(_START_TIMEOUT)
            self = cls(
                rpc_url=str(hello["rpcUrl"]),
                ws_url=str(hello["wsUrl"]),
                mints={},
                payer=Keypair.from_bytes(bytes(hello["payerSecretKey"])),
                external=False,
                _host=host,
            )
            self._create_mints(payer_balance_units)
            self.genesis_hash = self._genesis()
        except BaseException:
            host.close()
            raise
        log.info("surfpool up (pid %s) at %s, mints %s", host.proc.pid, self.rpc_url, self.mints)
        return self

    @classmethod
    def _external(cls, e: Mapping[str, str]) -> Surfpool:
        rpc_url = e["PAGO_DEV_SOLANA_RPC_URL"].strip()
        missing = [
            f"PAGO_DEV_SOLANA_{s}" for s in TOKEN_SYMBOLS if not e.get(f"PAGO_DEV_SOLANA_{s}")
        ]
        if missing:
            raise DevStackError(
                f"PAGO_DEV_SOLANA_RPC_URL is set, so {' and '.join(missing)} must name the test "
                "mint(s) on that cluster"
            )
        mints: dict[str, str] = {}
        for symbol in TOKEN_SYMBOLS:
            raw = e[f"PAGO_DEV_SOLANA_{symbol}"].strip()
            try:
                mints[symbol] = str(Pubkey.from_string(raw))
            except ValueError:
                raise DevStackError(f"PAGO_DEV_SOLANA_{symbol} is not a pubkey: {raw!r}") from None
        key = e.get("PAGO_DEV_SOLANA_PAYER_KEY", "").strip()
        payer = _parse_keypair(key) if key else None
        self = cls(
            rpc_url=rpc_url,
            ws_url=e.get("PAGO_DEV_SOLANA_WS_URL", "").strip() or _default_ws_url(rpc_url),
            mints=mints,
            payer=payer,
            external=True,
        )
        # An external mint may belong to Token-2022; its ATAs and instructions must say so.
        owners = self._rpc(
            lambda c: _account_owners(c, [Pubkey.from_string(m) for m in mints.values()])
        )
        for symbol, owner in zip(mints, owners, strict=True):
            if owner is None:
                raise DevStackError(f"mint {mints[symbol]} ({symbol}) does not exist at {rpc_url}")
            self._token_programs[symbol] = owner
        self.genesis_hash = self._genesis()
        return self

    def _create_mints(self, balance_units: int) -> None:
        """One transaction: create and initialize both mints, the payer's ATAs, mint to them."""
        payer = self._require_payer()
        mint_keys = {symbol: Keypair() for symbol in TOKEN_SYMBOLS}

        async def run(client: AsyncClient) -> Signature:
            rent = (await client.get_minimum_balance_for_rent_exemption(MINT_ACCOUNT_SIZE)).value
            ixs: list[Instruction] = []
            for mint_kp in mint_keys.values():
                mint = mint_kp.pubkey()
                ixs += [
                    create_account(
                        CreateAccountParams(
                            from_pubkey=payer.pubkey(),
                            to_pubkey=mint,
                            lamports=rent,
                            space=MINT_ACCOUNT_SIZE,
                            owner=TOKEN_PROGRAM_ID,
                        )
                    ),
                    initialize_mint2(
                        InitializeMint2Params(
                            decimals=TOKEN_DECIMALS,
                            program_id=TOKEN_PROGRAM_ID,
                            mint=mint,
                            mint_authority=payer.pubkey(),
                        )
                    ),
                    create_idempotent_associated_token_account(
                        payer.pubkey(), payer.pubkey(), mint
                    ),
                    mint_to_checked(
                        MintToCheckedParams(
                            program_id=TOKEN_PROGRAM_ID,
                            mint=mint,
                            dest=get_associated_token_address(payer.pubkey(), mint),
                            mint_authority=payer.pubkey(),
                            amount=balance_units,
                            decimals=TOKEN_DECIMALS,
                        )
                    ),
                ]
            return await _send(client, ixs, [payer, *mint_keys.values()])

        signature = self._rpc(run)
        self._rpc(lambda c: _confirm(c, signature))
        for symbol, kp in mint_keys.items():
            self.mints[symbol] = str(kp.pubkey())
            self._token_programs[symbol] = TOKEN_PROGRAM_ID

    # -- helpers for tests and `pago-dev pay` ----------------------------------------------

    def mint_pubkey(self, token_symbol: str) -> Pubkey:
        try:
            return Pubkey.from_string(self.mints[token_symbol.upper()])
        except KeyError:
            raise DevStackError(
                f"no test mint {token_symbol!r}; have {sorted(self.mints)}"
            ) from None

    def token_program(self, token_symbol: str) -> Pubkey:
        return self._token_programs.get(token_symbol.upper(), TOKEN_PROGRAM_ID)

    def associated_token_address(self, token_symbol: str, owner: str | Pubkey) -> str:
        """The owner's ATA for the mint: where ``transfer`` credits and deposits are found."""
        owner_key = owner if isinstance(owner, Pubkey) else Pubkey.from_string(owner)
        ata = get_associated_token_address(
            owner_key, self.mint_pubkey(token_symbol), self.token_program(token_symbol)
        )
        return str(ata)

    def token_balance(self, token_symbol: str, owner: str | Pubkey) -> int:
        """Balance of the owner's ATA in base units (0 when the ATA does not exist yet)."""
        ata = Pubkey.from_string(self.associated_token_address(token_symbol, owner))

        async def run(client: AsyncClient) -> int:
            info = await client.get_account_info(ata, commitment=Confirmed)
            if info.value is None:
                return 0
            balance = await client.get_token_account_balance(ata, commitment=Confirmed)
            return int(balance.value.amount)

        return self._rpc(run)

    def transfer(
        self,
        token_symbol: str,
        owner_pubkey: str | Pubkey,
        amount_units: int,
        *,
        wait: bool = True,
    ) -> str:
        """``transfer_checked`` from the payer's ATA to ``owner_pubkey``'s ATA; base58 signature.

        The recipient's ATA is created idempotently in the same transaction, so a fresh deposit
        owner needs no setup. With ``wait`` it returns once ``confirmed`` (raises on failure).
        """
        _check_units(amount_units)
        payer = self._require_payer()
        owner = (
            owner_pubkey if isinstance(owner_pubkey, Pubkey) else Pubkey.from_string(owner_pubkey)
        )
        mint = self.mint_pubkey(token_symbol)
        program = self.token_program(token_symbol)
        ixs = [
            create_idempotent_associated_token_account(payer.pubkey(), owner, mint, program),
            transfer_checked(
                TransferCheckedParams(
                    program_id=program,
                    source=get_associated_token_address(payer.pubkey(), mint, program),
                    mint=mint,
                    dest=get_associated_token_address(owner, mint, program),
                    owner=payer.pubkey(),
                    amount=amount_units,
                    decimals=TOKEN_DECIMALS,
                )
            ),
        ]
        signature = self._rpc(lambda c: _send(c, ixs, [payer]))
        if wait:
            self._rpc(lambda c: _confirm(c, signature))
        return str(signature)

    def _genesis(self) -> str:
        async def run(client: AsyncClient) -> str:
            return str((await client.get_genesis_hash()).value)

        return self._rpc(run)

    def cheat(self, method: str, *params: Any) -> Any:
        """Call a surfnet cheat code in node, e.g. ``cheat("fundSol", pubkey, lamports)``."""
        if self._host is None:
            raise DevStackError("cheat codes need the embedded surfpool")
        return self._host.request(method, params, _CHEAT_TIMEOUT)

    def _require_payer(self) -> Keypair:
        if self.payer is None:
            raise DevStackError("no Solana payer: set PAGO_DEV_SOLANA_PAYER_KEY")
        return self.payer

    def _rpc(self, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run one async solana-py exchange from sync code (with a client of its own loop)."""

        async def run() -> T:
            async with AsyncClient(self.rpc_url, commitment=Confirmed, timeout=30) as client:
                return await call(client)

        return run_coroutine_sync(run)

    # -- stop ------------------------------------------------------------------------------

    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _send(
    client: AsyncClient, ixs: Sequence[Instruction], signers: Sequence[Keypair]
) -> Signature:
    blockhash: Hash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
    tx = Transaction.new_signed_with_payer(ixs, signers[0].pubkey(), signers, blockhash)
    resp = await client.send_raw_transaction(
        bytes(tx), opts=TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
    )
    return resp.value


async def _confirm(client: AsyncClient, signature: Signature) -> None:
    """Poll until ``confirmed`` or better; raise on a failed transaction or timeout.

    solana-py's ``confirm_transaction`` sleeps 0.5 s between polls; a simnet confirms in
    milliseconds, so poll faster.
    """
    try:
        async with asyncio.timeout(_CONFIRM_TIMEOUT):
            while True:
                status = (await client.get_signature_statuses([signature])).value[0]
                if status is not None:
                    if status.err is not None:
                        raise DevStackError(f"transaction {signature} failed: {status.err}")
                    level = str(status.confirmation_status)
                    if level.endswith(("Confirmed", "Finalized")):
                        return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise DevStackError(
            f"transaction {signature} not confirmed in {_CONFIRM_TIMEOUT:.0f} s"
        ) from None


async def _account_owners(client: AsyncClient, keys: list[Pubkey]) -> list[Pubkey | None]:
    infos = (await client.get_multiple_accounts(keys)).value
    owners: list[Pubkey | None] = []
    for info in infos:
        if info is None:
            owners.append(None)
        elif info.owner in (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID):
            owners.append(info.owner)
        else:
            raise DevStackError(f"account owned by {info.owner} is not an SPL mint")
    return owners


def _check_units(amount_units: int) -> None:
    """Token amounts are ints in base units (u64 on Solana); never floats."""
    if isinstance(amount_units, bool) or not isinstance(amount_units, int):
        raise TypeError(f"amount must be int base units, not {type(amount_units).__name__}")
    if not 0 <= amount_units < 2**64:
        raise ValueError("amount must fit in u64")


def _parse_keypair(raw: str) -> Keypair:
    try:
        if raw.startswith("["):
            return Keypair.from_bytes(bytes(json.loads(raw)))
        return Keypair.from_base58_string(raw)
    except ValueError as exc:
        raise DevStackError(f"PAGO_DEV_SOLANA_PAYER_KEY is not a keypair: {exc}") from None


def _default_ws_url(rpc_url: str) -> str:
    parts = urlsplit(rpc_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    netloc = parts.netloc
    if parts.port is not None and parts.hostname is not None:
        netloc = f"{parts.hostname}:{parts.port + 1}"
    return urlunsplit(parts._replace(scheme=scheme, netloc=netloc))
