"""Every network × mode of the packaged registry names the chain its RPC endpoints must serve
(the watcher refuses any other): EVM by chain id, TRON and SOLANA by genesis hash."""

from __future__ import annotations

from pathlib import Path

from pago.common.enums import ChainFamily, Mode, Network
from pago.common.networks import load_registry


class TestRegistry:
    def test_every_network_and_mode_has_an_identity(self) -> None:
        registry = load_registry()
        for network, spec in registry.networks.items():
            for mode, mode_spec in spec.modes.items():
                if spec.family is ChainFamily.EVM:
                    assert mode_spec.chain_id is not None, (network, mode)
                    assert mode_spec.chain_identity == str(mode_spec.chain_id)
                else:
                    assert mode_spec.genesis_hash, (network, mode)
                    assert mode_spec.chain_identity == mode_spec.genesis_hash

    def test_the_real_values(self) -> None:
        registry = load_registry()
        assert registry.network(Network.ETHEREUM).mode(Mode.LIVE).chain_identity == "1"
        assert registry.network(Network.TRON).mode(Mode.LIVE).genesis_hash == (
            "00000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc"
        )
        assert registry.network(Network.TRON).mode(Mode.TEST).genesis_hash == (
            "0000000000000000d698d4192c56cb6be724a558448e2684802de4d6cd8690dc"
        )
        assert registry.network(Network.SOLANA).mode(Mode.LIVE).genesis_hash == (
            "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
        )
        assert registry.network(Network.SOLANA).mode(Mode.TEST).genesis_hash == (
            "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
        )

    def test_an_override_names_a_local_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "chains.toml"
        path.write_text('[networks.SOLANA.test]\ngenesis_hash = "Local111"\n')
        spec = load_registry(path).network(Network.SOLANA).mode(Mode.TEST)
        assert spec.chain_identity == "Local111"
