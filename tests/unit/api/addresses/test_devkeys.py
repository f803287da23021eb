"""Generated development keys: each secret really controls the address shown."""

from __future__ import annotations

import base58
from bip_utils import EthAddrEncoder, Secp256k1PrivateKey
from solders.keypair import Keypair

from pago.api.addresses.codec import normalize_address
from pago.api.addresses.devkeys import generate
from pago.common.enums import ChainFamily


def test_every_family_yields_valid_distinct_addresses_with_their_keys() -> None:
    for family in ChainFamily:
        keys = generate(family, 5)
        assert len({k.address for k in keys}) == 5
        for key in keys:
            assert normalize_address(family, key.address) == key.address


def test_a_solana_secret_is_the_keypair_wallets_import() -> None:
    for key in generate(ChainFamily.SOLANA, 3):
        assert str(Keypair.from_base58_string(key.secret).pubkey()) == key.address


def test_an_evm_and_a_tron_address_share_the_key_s_20_bytes() -> None:
    for family in (ChainFamily.EVM, ChainFamily.TRON):
        for key in generate(family, 3):
            evm = EthAddrEncoder.EncodeKey(
                Secp256k1PrivateKey.FromBytes(bytes.fromhex(key.secret)).PublicKey()
            )
            if family is ChainFamily.EVM:
                assert key.address == evm
            else:
                raw = base58.b58decode_check(key.address)
                assert raw == b"\x41" + bytes.fromhex(evm[2:])
