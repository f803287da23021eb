"""anvil with 6-decimal test USDT/USDC: decimals, funded payers, and a transfer seen in logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from pago.devstack import DevStackError
from pago.devstack.anvil import DEFAULT_PAYER_BALANCE_UNITS, Anvil

TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    with Anvil.start(tmp_path_factory.mktemp("devstack-anvil")) as node:
        yield node


def _topic_address(address: str) -> str:
    return "0x" + "0" * 24 + address[2:].lower()


def test_tokens_have_six_decimals(anvil: Anvil) -> None:
    assert set(anvil.tokens) == {"USDT", "USDC"}
    for symbol, address in anvil.tokens.items():
        assert Web3.is_checksum_address(address)
        token = anvil.token(symbol)
        assert token.functions.decimals().call() == 6
        assert token.functions.symbol().call() == symbol


def test_payers_are_funded(anvil: Anvil) -> None:
    if anvil.external:
        pytest.skip("balances on an external node are whatever its operator minted")
    assert len(anvil.payers) == 10
    for address, key in anvil.payers:
        assert Web3.is_checksum_address(address)
        assert anvil.web3.eth.account.from_key(key).address == address
        assert anvil.web3.eth.get_balance(Web3.to_checksum_address(address)) > 0
        for symbol in anvil.tokens:
            assert anvil.balance_of(symbol, address) == DEFAULT_PAYER_BALANCE_UNITS


def test_transfer_emits_a_transfer_log(anvil: Anvil) -> None:
    w3 = anvil.web3
    recipient = w3.eth.account.create().address
    sender = anvil.payers[3][0]
    before = anvil.balance_of("USDC", sender)

    tx_hash = anvil.transfer("USDC", 3, recipient, 12_345_678)

    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    logs = w3.eth.get_logs(
        {
            "address": anvil.tokens["USDC"],  # type: ignore[typeddict-item]
            "fromBlock": receipt["blockNumber"],
            "toBlock": receipt["blockNumber"],
            "topics": [TRANSFER_TOPIC, None, _topic_address(recipient)],
        }
    )
    assert len(logs) == 1
    (log,) = logs
    assert log["transactionHash"].to_0x_hex() == tx_hash
    assert log["topics"][1].to_0x_hex() == _topic_address(sender)
    assert int.from_bytes(log["data"], "big") == 12_345_678
    assert anvil.balance_of("USDC", recipient) == 12_345_678
    assert anvil.balance_of("USDC", sender) == before - 12_345_678


def test_amounts_must_be_int_base_units(anvil: Anvil) -> None:
    with pytest.raises(TypeError):
        anvil.transfer("USDT", 1, anvil.payers[2][0], 1.5)  # type: ignore[arg-type]
    with pytest.raises(DevStackError):
        anvil.transfer("DAI", 1, anvil.payers[2][0], 1)


def test_block_time_mines_without_transactions(tmp_path: Path) -> None:
    with Anvil.start(tmp_path, block_time=0.1, env={}) as node:
        first = node.web3.eth.block_number
        deadline = time.monotonic() + 30  # only bounds a failing test; no transaction is sent
        while node.web3.eth.block_number < first + 2:
            assert time.monotonic() < deadline, "no block was mined without a transaction"
            time.sleep(0.05)
        assert node.token("USDT").functions.decimals().call() == 6


def test_external_node_requires_token_addresses() -> None:
    with pytest.raises(DevStackError, match="PAGO_DEV_EVM_USDT and PAGO_DEV_EVM_USDC"):
        Anvil.start(env={"PAGO_DEV_EVM_RPC_URL": "http://127.0.0.1:9"})
