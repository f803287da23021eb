"""The QR symbols the page serves, read back by zxing-cpp; and the payment URIs they encode."""

from __future__ import annotations

from decimal import Decimal

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from pago.api.checkout_page import qr
from pago.api.checkout_page.payment import payment_uri
from pago.common.enums import ChainFamily
from tests.support.qr_decoder import decode, matrix_from_svg

EIP681 = (
    "ethereum:0xdAC17F958D2ee523a2206206994597C13D831ec7@1/transfer"
    "?address=0x9858EfFD232B4033E47d90003D41EC34EcaEda94&uint256=10500000"
)


@pytest.mark.parametrize(
    "payload",
    [
        "T",
        "TQFEyGNzHZAJmebJUvsoZvJghHm2yNhXAD",
        EIP681,
        "solana:7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU?amount=10.5"
        "&spl-token=EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v&label=Acme%20Shop",
        "é" * 100,  # multi-byte UTF-8, version 9 or 10 territory
    ],
)
def test_what_is_encoded_reads_back(payload: str) -> None:
    assert decode(qr.encode(payload.encode())).decode() == payload


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_any_bytes_up_to_version_10_read_back(data: bytes) -> None:
    assert decode(qr.encode(data)) == data


def test_the_smallest_version_that_fits_is_used() -> None:
    assert len(qr.encode(b"x" * 14)) == 21  # version 1-M holds 14 bytes
    assert len(qr.encode(b"x" * 15)) == 25
    assert len(qr.encode(b"x" * 122)) == 17 + 4 * 7  # 7-M holds 122
    assert len(qr.encode(EIP681.encode())) == 17 + 4 * 8  # 136 bytes


def test_too_much_data_is_refused() -> None:
    with pytest.raises(qr.QrError):
        qr.encode(b"x" * 3000)


def test_the_reader_refuses_another_level_or_a_ruined_symbol() -> None:
    level_l = segno.make_qr(EIP681, error="l", boost_error=False, mode="byte")
    with pytest.raises(AssertionError, match="level L"):
        decode([[bool(m) for m in row] for row in level_l.matrix])
    ruined = qr.encode(EIP681.encode())
    for y in range(9, len(ruined) - 9):
        ruined[y] = [not m for m in ruined[y]]
    with pytest.raises(AssertionError):
        decode(ruined)


def test_the_svg_draws_the_same_symbol() -> None:
    svg = qr.svg(EIP681, title="Pay 10.5 <USDT>")
    assert decode(matrix_from_svg(svg)).decode() == EIP681
    assert "<title>Pay 10.5 &lt;USDT&gt;</title>" in svg


class TestPaymentUri:
    def test_evm_is_an_eip681_token_transfer(self) -> None:
        uri = payment_uri(
            ChainFamily.EVM,
            pay_address="0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            contract="0xdAC17F958D2ee523a2206206994597C13D831ec7",
            amount=Decimal("10.5"),
            decimals=6,
            chain_id=1,
            label="Acme",
        )
        assert uri == EIP681

    def test_evm_with_18_decimals(self) -> None:
        uri = payment_uri(
            ChainFamily.EVM,
            pay_address="0xabc",
            contract="0x55d398326f99059fF775485246999027B3197955",
            amount=Decimal("0.000000000000000001"),
            decimals=18,
            chain_id=56,
            label="Acme",
        )
        assert uri.endswith("@56/transfer?address=0xabc&uint256=1")

    def test_solana_pay(self) -> None:
        uri = payment_uri(
            ChainFamily.SOLANA,
            pay_address="7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
            contract="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
            amount=Decimal("10.50"),
            decimals=6,
            chain_id=None,
            label="Acme & Co",
        )
        assert uri == (
            "solana:7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU?amount=10.50"
            "&spl-token=EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v&label=Acme%20%26%20Co"
        )

    def test_tron_is_the_address(self) -> None:
        address = "TQFEyGNzHZAJmebJUvsoZvJghHm2yNhXAD"
        uri = payment_uri(
            ChainFamily.TRON,
            pay_address=address,
            contract="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            amount=Decimal("10.5"),
            decimals=6,
            chain_id=None,
            label="Acme",
        )
        assert uri == address
