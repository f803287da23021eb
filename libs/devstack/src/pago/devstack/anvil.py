"""An EVM chain for dev and tests: anvil with 6-decimal test USDT and USDC, or an external node.

Embedded: the anvil binary from npm ``@foundry-rs/anvil-linux-amd64`` on a free port; the test
token (OpenZeppelin ERC20, ``decimals() == 6``, open ``mint``) is compiled once with solcjs and
cached by source hash; both tokens are deployed from dev account 0, and their constructors give
every dev account the same balance. ``payers`` are anvil's funded dev accounts, in anvil's order.

External (``PAGO_DEV_EVM_RPC_URL``): the token contracts come from ``PAGO_DEV_EVM_USDT`` and
``PAGO_DEV_EVM_USDC`` and payer keys, if any, from ``PAGO_DEV_EVM_PAYER_KEYS`` (comma-separated).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pago.devstack._support import (
    PACKAGE_DIR,
    DevStackError,
    cache_dir,
    drain_in_thread,
    environ,
    node_executable,
    node_modules_dir,
    stop_process,
)

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract

log = logging.getLogger(__name__)

TOKEN_DECIMALS = 6
TOKEN_NAMES: Mapping[str, str] = {"USDT": "Tether USD (Pago test)", "USDC": "USD Coin (Pago test)"}
DEFAULT_PAYER_BALANCE_UNITS = 1_000_000 * 10**TOKEN_DECIMALS  # one million tokens each
_ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64"
_CONTRACT_SOURCE = PACKAGE_DIR / "contracts" / "PagoTestToken.sol"
_CONTRACT_NAME = "PagoTestToken"
_COMPILER_SCRIPT = PACKAGE_DIR / "js" / "compile_solidity.js"
_LISTENING = re.compile(rb"Listening on (\S+):(\d+)")
_KEY_LINE = re.compile(r"^\(\d+\) (0x[0-9a-fA-F]{64})\s*$", re.MULTILINE)
_START_TIMEOUT = 15.0
_RECEIPT_TIMEOUT = 30.0


# -- the test token -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledContract:
    abi: list[dict[str, Any]]
    bytecode: str
    """0x-prefixed creation bytecode."""


def compile_test_token(env: Mapping[str, str] | None = None) -> CompiledContract:
    """ABI and bytecode of ``PagoTestToken``, compiled by solcjs once per source hash.

    The cache key covers the source, the compiler settings and the solc and OpenZeppelin
    versions in node_modules, so editing any of them recompiles (~1.5-3 s); a hit costs ~1 ms.
    """
    modules = node_modules_dir("solc", env)
    source = _CONTRACT_SOURCE.read_text()
    settings: dict[str, Any] = {
        "optimizer": {"enabled": True, "runs": 200},
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
    }
    versions = [
        _package_version(modules / "solc"),
        _package_version(modules / "@openzeppelin" / "contracts"),
    ]
    key = hashlib.sha256(
        json.dumps([source, settings, versions], sort_keys=True).encode()
    ).hexdigest()[:16]
    cached = cache_dir(env) / f"{_CONTRACT_NAME}-{key}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return CompiledContract(abi=data["abi"], bytecode=data["bytecode"])

    standard_input = {
        "language": "Solidity",
        "sources": {_CONTRACT_SOURCE.name: {"content": source}},
        "settings": settings,
    }
    started = time.monotonic()
    proc = subprocess.run(
        [node_executable(env), str(_COMPILER_SCRIPT), str(modules)],
        input=json.dumps(standard_input).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise DevStackError(f"solcjs failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise DevStackError("solc: " + "; ".join(e.get("formattedMessage", "") for e in errors))
    contract = output["contracts"][_CONTRACT_SOURCE.name][_CONTRACT_NAME]
    compiled = CompiledContract(
        abi=contract["abi"], bytecode="0x" + contract["evm"]["bytecode"]["object"]
    )
    # Write-then-rename: parallel test processes may compile at once; readers never see half.
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"abi": compiled.abi, "bytecode": compiled.bytecode}))
    tmp.replace(cached)
    log.info("compiled %s in %.1f s", _CONTRACT_NAME, time.monotonic() - started)
    return compiled


def _package_version(package_dir: Path) -> str:
    try:
        return str(json.loads((package_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


# -- anvil ----------------------------------------------------------------------------------


def find_anvil(env: Mapping[str, str] | None = None) -> Path:
    """The real anvil binary (the npx wrapper would add ~0.7 s per start)."""
    binary = node_modules_dir(_ANVIL_PACKAGE, env) / _ANVIL_PACKAGE / "bin" / "anvil"
    if not binary.is_file():
        raise DevStackError(f"no anvil binary at {binary}")
    return binary


@dataclass
class Anvil:
    """An EVM JSON-RPC node with Pago's test tokens.

    ``tokens`` maps symbol → checksummed contract address; every token has 6 decimals.
    ``payers`` are ``(checksummed address, 0x private key)`` pairs funded with ETH and tokens.
    """

    rpc_url: str
    ws_url: str
    chain_id: int
    tokens: dict[str, str]
    payers: list[tuple[str, str]]
    external: bool
    block_time: float | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _drain: threading.Thread | None = field(default=None, repr=False)
    _w3: Web3 | None = field(default=None, repr=False)
    _abi: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _send_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def web3(self) -> Web3:
        if self._w3 is None:
            from web3 import Web3

            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    # -- start -----------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | str | None = None,
        *,
        block_time: float | None = None,
        payer_balance_units: int = DEFAULT_PAYER_BALANCE_UNITS,
        env: Mapping[str, str] | None = None,
    ) -> Anvil:
        """Use ``PAGO_DEV_EVM_RPC_URL`` if set; otherwise start anvil and deploy the tokens.

        ``block_time`` (seconds) mines on a timer instead of one block per transaction.
        ``workdir`` receives ``anvil.log``; None discards anvil's output.
        """
        e = environ(env)
        if e.get("PAGO_DEV_EVM_RPC_URL", "").strip():
            return cls._external(e)
        _check_units(payer_balance_units)
        wd = Path(workdir).resolve() if workdir is not None else None
        if wd is not None:
            wd.mkdir(parents=True, exist_ok=True)
        args = [str(find_anvil(env)), "--host", "127.0.0.1", "--port", "0"]
        if block_time is not None:
            args += ["--block-time", repr(float(block_time))]
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self: Anvil | None = None
        try:
            # Compile (or load from cache) while anvil boots; its banner is far below the
            # pipe's 64 KiB, so anvil cannot block on an unread pipe meanwhile.
            compiled = compile_test_token(env)
            host, port, keys, early = _read_banner(proc, _START_TIMEOUT)
            drain = drain_in_thread(
                proc.stdout,  # type: ignore[arg-type]  # PIPE was requested
                wd / "anvil.log" if wd is not None else None,
                "anvil",
                prefix=early,
            )
            self = cls(
                rpc_url=f"http://{host}:{port}",
                ws_url=f"ws://{host}:{port}",
                chain_id=0,
                tokens={},
                payers=[],
                external=False,
                block_time=block_time,
                _proc=proc,
                _drain=drain,
                _abi=compiled.abi,
            )
            from eth_account import Account

            self.payers = [(Account.from_key(k).address, k) for k in keys]
            if not self.payers:
                raise DevStackError("anvil printed no dev account keys")
            self.chain_id = self.web3.eth.chain_id
            self._deploy_tokens(compiled, payer_balance_units)
        except BaseException:
            if self is not None:
                self.close()
            else:
                stop_process(proc)
            raise
        log.info("anvil up (pid %s) at %s, tokens %s", proc.pid, self.rpc_url, self.tokens)
        return self

    @classmethod
    def _external(cls, e: Mapping[str, str]) -> Anvil:
        from web3 import Web3

        rpc_url = e["PAGO_DEV_EVM_RPC_URL"].strip()
        missing = [f"PAGO_DEV_EVM_{s}" for s in TOKEN_NAMES if not e.get(f"PAGO_DEV_EVM_{s}")]
        if missing:
            raise DevStackError(
                f"PAGO_DEV_EVM_RPC_URL is set, so {' and '.join(missing)} must name the test "
                "token contract(s) on that chain"
            )
        tokens: dict[str, str] = {}
        for symbol in TOKEN_NAMES:
            raw = e[f"PAGO_DEV_EVM_{symbol}"].strip()
            if not Web3.is_address(raw):
                raise DevStackError(f"PAGO_DEV_EVM_{symbol} is not an EVM address: {raw!r}")
            tokens[symbol] = Web3.to_checksum_address(raw)
        from eth_account import Account

        keys = [k.strip() for k in e.get("PAGO_DEV_EVM_PAYER_KEYS", "").split(",") if k.strip()]
        ws_url = e.get("PAGO_DEV_EVM_WS_URL", "").strip() or re.sub(r"^http", "ws", rpc_url)
        self = cls(
            rpc_url=rpc_url,
            ws_url=ws_url,
            chain_id=0,
            tokens=tokens,
            payers=[(Account.from_key(k).address, k) for k in keys],
            external=True,
            _abi=compile_test_token(e).abi,  # only the ERC-20 part of the ABI is used
        )
        self.chain_id = self.web3.eth.chain_id
        return self

    def _deploy_tokens(self, compiled: CompiledContract, balance_units: int) -> None:
        """Deploy USDT and USDC from payer 0; each constructor mints to every payer.

        Sent one by one, in nonce order: anvil's automine can strand transactions of one
        sender that arrive out of nonce order (as the requests of one JSON-RPC batch may),
        leaving them pending until some later transaction mines a block.
        """
        w3 = self.web3
        deployer = w3.to_checksum_address(self.payers[0][0])
        holders = [w3.to_checksum_address(address) for address, _ in self.payers]
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        nonce = int(w3.eth.get_transaction_count(deployer, "pending"))
        hashes: dict[str, str] = {}
        for i, (symbol, name) in enumerate(TOKEN_NAMES.items()):
            data = factory.constructor(name, symbol, holders, balance_units).data_in_transaction
            hashes[symbol] = self._send({"from": deployer, "data": data, "nonce": hex(nonce + i)})
        for symbol, tx_hash in hashes.items():
            receipt = self._receipt(tx_hash)
            if receipt["status"] != 1 or not receipt["contractAddress"]:
                raise DevStackError(f"deploying test {symbol} failed: {tx_hash}")
            self.tokens[symbol] = w3.to_checksum_address(receipt["contractAddress"])

    def _send(self, tx: Mapping[str, str]) -> str:
        """``eth_sendTransaction`` from an account the node holds (anvil's dev accounts)."""
        from web3.types import RPCEndpoint

        response = self.web3.provider.make_request(RPCEndpoint("eth_sendTransaction"), [tx])
        if "error" in response:
            raise DevStackError(f"eth_sendTransaction failed: {response['error']}")
        return str(response["result"])

    def _receipt(self, tx_hash: str) -> Any:
        from hexbytes import HexBytes

        return self.web3.eth.wait_for_transaction_receipt(
            HexBytes(tx_hash), timeout=_RECEIPT_TIMEOUT, poll_latency=0.02
        )

    # -- helpers for tests and `pago-dev pay` ----------------------------------------------

    def token(self, symbol: str) -> Contract:
        """The web3 contract of test token ``symbol`` (``USDT`` or ``USDC``)."""
        try:
            address = self.tokens[symbol.upper()]
        except KeyError:
            raise DevStackError(f"no test token {symbol!r}; have {sorted(self.tokens)}") from None
        return self.web3.eth.contract(address=self.web3.to_checksum_address(address), abi=self._abi)

    def balance_of(self, token_symbol: str, address: str) -> int:
        """Token balance in base units."""
        owner = self.web3.to_checksum_address(address)
        balance: int = self.token(token_symbol).functions.balanceOf(owner).call()
        return balance

    def transfer(
        self,
        token_symbol: str,
        from_index: int,
        to_address: str,
        amount_units: int,
        *,
        wait: bool = True,
    ) -> str:
        """ERC-20 ``transfer`` from payer ``from_index``; returns the 0x tx hash.

        Signed locally with the payer's key, so it works on an external node too. With
        ``wait`` it returns once mined and raises if the transfer reverted.
        """
        _check_units(amount_units)
        if not 0 <= from_index < len(self.payers):
            raise DevStackError(f"no payer {from_index}; have {len(self.payers)}")
        w3 = self.web3
        payer_address, key = self.payers[from_index]
        address = w3.to_checksum_address(payer_address)
        call = self.token(token_symbol).functions.transfer(
            w3.to_checksum_address(to_address), amount_units
        )
        # The lock keeps two threads paying from one account from taking the same nonce.
        with self._send_lock:
            nonce = w3.eth.get_transaction_count(address, "pending")
            tx = call.build_transaction({"from": address, "nonce": nonce, "chainId": self.chain_id})
            signed = w3.eth.account.sign_transaction(tx, key)
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()
        if wait:
            receipt = self._receipt(tx_hash)
            if receipt["status"] != 1:
                raise DevStackError(f"transfer {tx_hash} reverted")
        return tx_hash

    def mint(self, token_symbol: str, to_address: str, amount_units: int) -> str:
        """Mint test tokens to anyone (the test token's open faucet); embedded anvil only."""
        _check_units(amount_units)
        if self.external:
            raise DevStackError("mint() is only for the embedded anvil's test tokens")
        token = self.token(token_symbol)
        data = token.encode_abi("mint", [self.web3.to_checksum_address(to_address), amount_units])
        tx_hash = self._send({"from": self.payers[0][0], "to": token.address, "data": data})
        self._receipt(tx_hash)
        return tx_hash

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks at once (confirmations in tests); embedded only."""
        from web3.types import RPCEndpoint

        self.web3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(blocks)])

    # -- stop ------------------------------------------------------------------------------

    def close(self) -> None:
        proc, drain = self._proc, self._drain
        self._proc = self._drain = None
        stop_process(proc, drain=drain)
        self._w3 = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_units(amount_units: int) -> None:
    """Token amounts are ints in base units; a float or bool here is a bug upstream."""
    if isinstance(amount_units, bool) or not isinstance(amount_units, int):
        raise TypeError(f"amount must be int base units, not {type(amount_units).__name__}")
    if amount_units < 0:
        raise ValueError("amount must be >= 0")


def _read_banner(
    proc: subprocess.Popen[bytes], timeout: float
) -> tuple[str, int, list[str], bytes]:
    """Read anvil's startup output up to ``Listening on host:port``.

    Returns host, port, the dev accounts' private keys, and everything read so far (for the
    log). ``select`` bounds the wait: anvil that hangs or dies must not hang the caller.
    """
    if proc.stdout is None:
        raise DevStackError("anvil was started without a stdout pipe")
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while True:
        match = _LISTENING.search(buffer)
        if match:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DevStackError(f"anvil did not report its port within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            tail = buffer.decode(errors="replace")[-2000:]
            raise DevStackError(f"anvil exited ({proc.wait()}) before listening: {tail}")
        buffer += chunk
    # "Private Keys\n====\n(0) 0xac09...\n(1) ..." up to the next section ("Wallet").
    section = buffer.decode(errors="replace").partition("Private Keys")[2].partition("Wallet")[0]
    keys = _KEY_LINE.findall(section)
    return match.group(1).decode(), int(match.group(2)), keys, buffer
