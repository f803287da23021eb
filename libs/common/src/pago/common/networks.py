"""The networks and tokens registry, loaded from TOML (packaged defaults + an optional override).

A registry answers: which family is a network, how deep does a transfer have to be to credit, and
which token contract (with its decimals) does a (network, mode, token) triple use. A pair the
registry lacks (USDC on TRON) simply has no entry.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from pago.common.enums import ChainFamily, Mode, Network, Token
from pago.common.errors import ConfigError
from pago.common.money import ceil_units

DEFAULT_MIN_CREDIT = Decimal("0.01")
"""Smallest transfer (in whole tokens) that may move a session: anything below is dust."""

EVM_NETWORKS = frozenset(
    {
        Network.ETHEREUM,
        Network.BSC,
        Network.POLYGON,
        Network.ARBITRUM,
        Network.OPTIMISM,
        Network.BASE,
    }
)


@functools.lru_cache(maxsize=256)
def min_credit_units(min_credit: Decimal, decimals: int) -> int:
    """``min_credit`` whole tokens in base units, rounded up, and never below 1 base unit (so a
    zero-value transfer is always below the minimum, whatever the configuration).

    Cached: the matcher asks for every transfer, and the Decimal arithmetic (prec 78) was a
    measurable share of a batch; the answer depends on the two arguments alone."""
    return max(1, ceil_units(min_credit, decimals))


@dataclass(frozen=True, slots=True)
class TokenSpec:
    symbol: Token
    contract: str
    decimals: int
    min_credit: int | None = None
    """Smallest transfer in base units that credits or moves a session (``min_credit`` in the
    chains file, whole tokens); ``None`` means the default, 0.01 token."""

    @property
    def one(self) -> int:
        """One whole token in base units."""
        return int(10**self.decimals)

    @property
    def min_credit_units(self) -> int:
        """The minimum credit in base units (at least 1)."""
        if self.min_credit is None:
            return min_credit_units(DEFAULT_MIN_CREDIT, self.decimals)
        return max(1, self.min_credit)


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """A network as one mode sees it (live: mainnet; test: a testnet or a local devnet)."""

    name: str
    chain_id: int | None
    """EVM: the EIP-155 chain id every RPC endpoint must answer ``eth_chainId`` with."""
    tokens: Mapping[Token, TokenSpec]
    rpc_urls: tuple[str, ...] = ()
    confirmations: int | None = None
    """Overrides the network's depth in this mode (a local devnet may confirm sooner)."""
    detection_rpc_url: str | None = None
    """A public RPC endpoint a checkout page may use to watch the chain (the session object's
    ``detection_rpc_url``); ``None`` when none is configured. Never one of ``rpc_urls`` by
    default: those may carry provider keys."""
    genesis_hash: str | None = None
    """TRON: block 0's ``blockID`` (hex); SOLANA: ``getGenesisHash`` (base58). The watcher
    refuses an endpoint that answers otherwise."""

    @property
    def chain_identity(self) -> str | None:
        """What an endpoint of this chain must report: the chain id (EVM) or genesis hash."""
        if self.genesis_hash is not None:
            return self.genesis_hash
        return str(self.chain_id) if self.chain_id is not None else None


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    network: Network
    family: ChainFamily
    confirmations: int
    """Blocks on top of a transfer's block before it credits (0 on Solana: see commitment)."""
    commitment: str | None
    modes: Mapping[Mode, ModeSpec] = field(default_factory=dict)

    def mode(self, mode: Mode) -> ModeSpec:
        try:
            return self.modes[mode]
        except KeyError:
            raise ConfigError(f"network {self.network} has no {mode} mode configured") from None

    def confirmations_for(self, mode: Mode) -> int:
        override = self.mode(mode).confirmations
        return self.confirmations if override is None else override


@dataclass(frozen=True, slots=True)
class Registry:
    networks: Mapping[Network, NetworkSpec]

    def network(self, network: Network) -> NetworkSpec:
        return self.networks[network]

    def token(self, network: Network, mode: Mode, token: Token) -> TokenSpec | None:
        spec = self.networks.get(network)
        if spec is None or mode not in spec.modes:
            return None
        return spec.modes[mode].tokens.get(token)

    def token_by_contract(self, network: Network, mode: Mode, contract: str) -> TokenSpec | None:
        spec = self.networks[network].mode(mode)
        wanted = _contract_key(self.networks[network].family, contract)
        for token in spec.tokens.values():
            if _contract_key(self.networks[network].family, token.contract) == wanted:
                return token
        return None


def _contract_key(family: ChainFamily, contract: str) -> str:
    # EVM hex is case-insensitive (EIP-55 case is only a checksum); base58 is case-sensitive.
    return contract.lower() if family is ChainFamily.EVM else contract


def _optional_url(value: Any) -> str | None:
    """``detection_rpc_url``: absent or ``""`` means none; otherwise an http(s)/ws(s) URL."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(
        ("http://", "https://", "ws://", "wss://")
    ):
        raise ValueError(f"detection_rpc_url must be an http(s) or ws(s) URL, not {value!r}")
    return value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _min_credit(value: object, decimals: int) -> int:
    """A ``min_credit`` entry (whole tokens, a decimal string or a number) in base units."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"min_credit must be a decimal string, not {value!r}")
    try:
        # str() first: a TOML float 0.01 must mean the decimal 0.01, not its binary neighbour.
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"min_credit {value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"min_credit {value!r} must be a finite amount >= 0")
    return min_credit_units(amount, decimals)


def _token(sym: str, body: Mapping[str, Any], default_min_credit: object) -> TokenSpec:
    decimals = int(body["decimals"])
    return TokenSpec(
        Token(sym),
        str(body["contract"]),
        decimals,
        _min_credit(body.get("min_credit", default_min_credit), decimals),
    )


def _parse(raw: Mapping[str, Any], source: str) -> Registry:
    networks: dict[Network, NetworkSpec] = {}
    # min_credit may be set for every token (top level), per network, or per token (and mode).
    root_min_credit = raw.get("min_credit", str(DEFAULT_MIN_CREDIT))
    for name, body in raw.get("networks", {}).items():
        try:
            network = Network(name)
        except ValueError:
            known = ", ".join(Network)
            raise ConfigError(f"{source}: unknown network {name!r} (known: {known})") from None
        try:
            family = ChainFamily(body["family"])
            modes: dict[Mode, ModeSpec] = {}
            for mode in Mode:
                mode_body = body.get(mode.value)
                if mode_body is None:
                    continue
                network_min_credit = body.get("min_credit", root_min_credit)
                tokens = {
                    Token(sym): _token(sym, t, network_min_credit)
                    for sym, t in mode_body.get("tokens", {}).items()
                }
                modes[mode] = ModeSpec(
                    name=str(mode_body.get("name", mode.value)),
                    chain_id=mode_body.get("chain_id"),
                    tokens=tokens,
                    rpc_urls=tuple(mode_body.get("rpc_urls", ())),
                    confirmations=mode_body.get("confirmations"),
                    detection_rpc_url=_optional_url(mode_body.get("detection_rpc_url")),
                    genesis_hash=mode_body.get("genesis_hash"),
                )
            networks[network] = NetworkSpec(
                network=network,
                family=family,
                confirmations=int(body.get("confirmations", 0)),
                commitment=body.get("commitment"),
                modes=modes,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: network {name}: invalid entry ({exc})") from None
    return Registry(networks)


def load_registry(override_path: str | Path | None = None) -> Registry:
    """Load the packaged defaults, merged with ``override_path`` when given."""
    text = resources.files("pago.common").joinpath("chains.toml").read_text()
    raw = tomllib.loads(text)
    source = "chains.toml"
    if override_path is not None:
        path = Path(override_path)
        try:
            override = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"PAGO_CHAINS_FILE: no such file {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"PAGO_CHAINS_FILE: {path} is not valid TOML ({exc})") from None
        raw = _merge(raw, override)
        source = str(path)
    return _parse(raw, source)
