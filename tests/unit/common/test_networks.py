import hashlib
from pathlib import Path

import base58
import pytest
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from pago.common.enums import ChainFamily, Mode, Network, Token
from pago.common.errors import ConfigError
from pago.common.networks import load_registry


class TestDefaults:
    def test_every_network_has_its_family_and_live_tokens(self) -> None:
        registry = load_registry()
        assert set(registry.networks) == set(Network)
        assert registry.network(Network.TRON).family is ChainFamily.TRON
        assert registry.network(Network.SOLANA).family is ChainFamily.SOLANA
        assert registry.network(Network.BASE).family is ChainFamily.EVM

    @pytest.mark.parametrize(
        ("network", "token", "contract", "decimals"),
        [
            (Network.TRON, Token.USDT, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", 6),
            (Network.BSC, Token.USDT, "0x55d398326f99059fF775485246999027B3197955", 18),
            (Network.BSC, Token.USDC, "0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d", 18),
            (Network.SOLANA, Token.USDC, "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
        ],
    )
    def test_live_contracts_match_the_architecture_table(
        self, network: Network, token: Token, contract: str, decimals: int
    ) -> None:
        spec = load_registry().token(network, Mode.LIVE, token)
        assert spec is not None
        assert (spec.contract, spec.decimals) == (contract, decimals)

    def test_usdc_on_tron_does_not_exist(self) -> None:
        assert load_registry().token(Network.TRON, Mode.LIVE, Token.USDC) is None

    def test_confirmations(self) -> None:
        registry = load_registry()
        assert registry.network(Network.TRON).confirmations_for(Mode.LIVE) == 19
        assert registry.network(Network.POLYGON).confirmations_for(Mode.LIVE) == 128

    def test_contract_lookup_ignores_evm_case(self) -> None:
        spec = load_registry().token_by_contract(
            Network.ETHEREUM, Mode.LIVE, "0xdac17f958d2ee523a2206206994597c13d831ec7"
        )
        assert spec is not None
        assert spec.symbol is Token.USDT

    def test_test_mode_offers_every_live_network_and_token(self) -> None:
        registry = load_registry()
        for network, spec in registry.networks.items():
            for token, live in spec.mode(Mode.LIVE).tokens.items():
                test = registry.token(network, Mode.TEST, token)
                assert test is not None, f"{token} on {network} has no test-mode token"
                assert test.decimals == live.decimals
                assert test.contract != live.contract

    @pytest.mark.parametrize(
        ("network", "placeholder"),
        [
            (Network.POLYGON, "0xF36779D81c7536a44BD0627b0Ac1Ca3fAd11B112"),
            (Network.ARBITRUM, "0xF36779D81c7536a44BD0627b0Ac1Ca3fAd11B112"),
            (Network.OPTIMISM, "0xF36779D81c7536a44BD0627b0Ac1Ca3fAd11B112"),
            (Network.BASE, "0xF36779D81c7536a44BD0627b0Ac1Ca3fAd11B112"),
            (Network.SOLANA, "FbfYAzkrKmAzZnzdaWmm7zTzy84yQhqXV319boE9rqCb"),
        ],
    )
    def test_usdt_without_a_public_testnet_token_is_the_documented_placeholder(
        self, network: Network, placeholder: str
    ) -> None:
        spec = load_registry().token(network, Mode.TEST, Token.USDT)
        assert spec is not None
        assert spec.contract == placeholder
        # It is derived from a fixed label, so anyone can check it holds nothing real.
        if network is Network.SOLANA:
            assert base58.b58encode(hashlib.sha256(b"pago:test-usdt").digest()).decode() == (
                placeholder
            )
        else:
            assert to_checksum_address(keccak(b"pago:test-usdt")[-20:]) == placeholder

    def test_no_detection_rpc_url_by_default(self) -> None:
        registry = load_registry()
        for spec in registry.networks.values():
            for mode_spec in spec.modes.values():
                assert mode_spec.detection_rpc_url is None


class TestDetectionRpcUrl:
    def test_set_per_network_and_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(
            '[networks.SOLANA.test]\ndetection_rpc_url = "http://127.0.0.1:8899"\n'
            '[networks.TRON.live]\ndetection_rpc_url = "https://tron.example/rpc"\n'
        )
        registry = load_registry(path)
        assert registry.network(Network.SOLANA).mode(Mode.TEST).detection_rpc_url == (
            "http://127.0.0.1:8899"
        )
        assert registry.network(Network.SOLANA).mode(Mode.LIVE).detection_rpc_url is None
        assert registry.network(Network.TRON).mode(Mode.LIVE).detection_rpc_url == (
            "https://tron.example/rpc"
        )

    @pytest.mark.parametrize("value", ['"ftp://x.example"', '"not a url"', "42"])
    def test_anything_but_an_http_or_ws_url_is_refused(self, tmp_path: Path, value: str) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(f"[networks.BASE.test]\ndetection_rpc_url = {value}\n")
        with pytest.raises(ConfigError, match="detection_rpc_url"):
            load_registry(path)

    def test_empty_means_none(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text('[networks.BASE.test]\ndetection_rpc_url = ""\n')
        assert load_registry(path).network(Network.BASE).mode(Mode.TEST).detection_rpc_url is None


class TestOverride:
    def test_override_replaces_only_what_it_names(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(
            "[networks.ETHEREUM.test]\n"
            "chain_id = 31337\n"
            "confirmations = 2\n"
            'rpc_urls = ["http://127.0.0.1:8545"]\n'
            "[networks.ETHEREUM.test.tokens.USDT]\n"
            'contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
        )
        registry = load_registry(path)
        eth = registry.network(Network.ETHEREUM)
        assert eth.mode(Mode.TEST).chain_id == 31337
        assert eth.confirmations_for(Mode.TEST) == 2
        assert eth.confirmations_for(Mode.LIVE) == 12
        usdt = registry.token(Network.ETHEREUM, Mode.TEST, Token.USDT)
        assert usdt is not None
        assert usdt.contract == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        assert usdt.decimals == 6  # kept from the defaults

    def test_unknown_network_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text('[networks.DOGE]\nfamily = "evm"\n')
        with pytest.raises(ConfigError, match="unknown network 'DOGE'"):
            load_registry(path)

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="PAGO_CHAINS_FILE: no such file"):
            load_registry(tmp_path / "absent.toml")


class TestMinCredit:
    def test_default_is_one_hundredth_of_a_token_in_each_tokens_decimals(self) -> None:
        registry = load_registry()
        for network, spec in registry.networks.items():
            for mode in spec.modes:
                for token in spec.modes[mode].tokens.values():
                    assert token.min_credit_units == 10 ** (token.decimals - 2), (network, mode)
        bsc = registry.token(Network.BSC, Mode.LIVE, Token.USDT)
        assert bsc is not None
        assert bsc.min_credit_units == 10**16

    def test_per_network_and_per_token_overrides(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(
            '[networks.TRON]\nmin_credit = "0.5"\n'
            '[networks.ETHEREUM.live.tokens.USDC]\nmin_credit = "1.25"\n'
        )
        registry = load_registry(path)
        tron = registry.token(Network.TRON, Mode.LIVE, Token.USDT)
        usdc = registry.token(Network.ETHEREUM, Mode.LIVE, Token.USDC)
        usdt = registry.token(Network.ETHEREUM, Mode.LIVE, Token.USDT)
        assert tron is not None
        assert usdc is not None
        assert usdt is not None
        assert (tron.min_credit_units, usdc.min_credit_units) == (500_000, 1_250_000)
        assert usdt.min_credit_units == 10_000

    @pytest.mark.parametrize("value", ['"0"', '"0.0000000001"', "0"])
    def test_never_below_one_base_unit(self, tmp_path: Path, value: str) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(f"min_credit = {value}\n")
        token = load_registry(path).token(Network.TRON, Mode.LIVE, Token.USDT)
        assert token is not None
        assert token.min_credit_units == 1

    @pytest.mark.parametrize("value", ['"-1"', '"lots"', "true", '"NaN"'])
    def test_a_bad_minimum_is_named(self, tmp_path: Path, value: str) -> None:
        path = tmp_path / "chains.toml"
        path.write_text(f"[networks.TRON]\nmin_credit = {value}\n")
        with pytest.raises(ConfigError, match="min_credit"):
            load_registry(path)
