"""What a wallet scans: the payment URI of a session, per chain family.

- EVM: EIP-681 ``ethereum:<token>@<chain id>/transfer?address=<deposit>&uint256=<base units>``
  (the ERC-20 ``transfer`` call itself, so a wallet pre-fills token, recipient and amount);
- SOLANA: Solana Pay ``solana:<deposit>?amount=<decimal>&spl-token=<mint>&label=…`` (the
  recipient is the owner; wallets pay its associated token account for the mint);
- TRON: the bare address (TRON wallets have no common payment-URI scheme).
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

from pago.common.enums import ChainFamily


def payment_uri(
    family: ChainFamily,
    *,
    pay_address: str,
    contract: str,
    amount: Decimal,
    decimals: int | None,
    chain_id: int | None,
    label: str,
) -> str:
    """The URI for paying ``amount`` (whole tokens) of the token at ``contract``."""
    if family is ChainFamily.EVM:
        chain = f"@{chain_id}" if chain_id is not None else ""
        uri = f"ethereum:{contract}{chain}/transfer?address={pay_address}"
        if decimals is not None and amount > 0:
            uri += f"&uint256={int(amount.scaleb(decimals))}"
        return uri
    if family is ChainFamily.SOLANA:
        params = [f"spl-token={contract}", f"label={quote(label, safe='')}"]
        if amount > 0:
            params.insert(0, f"amount={amount:f}")
        return f"solana:{pay_address}?" + "&".join(params)
    return pay_address
