"""The SOLANA ``ChainSource``: SPL token deposits to watched owners' associated token accounts.

A deposit address is an owner pubkey (from an imported pool). Payments land in the owner's
associated token account (ATA) of each registry mint, derived from owner + token program +
mint (the program is read from the mint account once: SPL Token or Token-2022). The owner
itself appears in no ``transfer_checked``, so the ATAs are what is followed.

How a slot range ``[start, end]`` is answered (the core drives it like EVM blocks):

1. **Signatures** per ATA with ``getSignaturesForAddress(ATA, until=<newest known>)``, paged
   with ``before`` past the page size (1,000), at ``confirmed`` commitment. Each ATA remembers
   the slot through which its list is complete (``verified``: the slot its endpoint had
   vouched for when the newest page was asked for) and from which (``complete_from``), so a
   range another loop already swept costs nothing, and one sweep serves every range up to it.
   A node vouches for its confirmed slot less ``INDEX_MARGIN`` (2): Surfpool's confirmed slot
   can still take transactions, and Agave indexes transaction statuses asynchronously. The
   source's head is that slot too, and a poll keeps no signature above it, so ``until`` only
   ever names a signature below which nothing can still appear.
2. **Transactions** (``getTransaction``, ``jsonParsed``, cached per signature): the credit is
   the ATA's post − pre token balance for a registry mint (pre is 0 when the ATA was created
   in the same transaction); the sender is the owner of the token account of that mint whose
   balance fell the most (the fee payer if none fell, e.g. a mint). Failed transactions and
   debits are ignored; token accounts other than the followed ATAs are never credited.
3. **Finality**: every signature in a slot at or below the finalized slot must have
   ``getSignatureStatuses`` = ``finalized`` (Surfpool's ``getSignaturesForAddress`` ignores
   ``commitment: finalized``, so the list itself cannot be trusted to say it).

The cost that matters is step 1: one call per ATA per sweep, and with ``confirmed`` at
``finalized`` the core asks for a range reaching past the finalized slot on every head poll
(the detected stage). With ``balance_hints`` those ranges are answered from the ATAs' token
balances instead: ``getMultipleAccounts`` (100 ATAs a call, 8 bytes of each: the amount) and a
signature poll of only the ATAs whose balance moved (and, once more, until their signatures
cover the slot the new balance was seen at). A balance can move and come back between
two reads (a deposit swept out at once): such a transfer is missed by the *detected* stage
only, because a range ending at or below the finalized slot — the confirmed stage, backfills,
re-checks — is always answered from full signature sweeps. Sweeps run at bulk priority
(``PriorityGate``) so detection never queues behind one, and every call is paid for from one
``CallBudget``. ``docs/solana-watcher.md`` has the numbers.

The modules, one concern each:

- ``decode``: what is read out of an answer, without I/O (a transaction's credits, a token
  account's amount, a block's time; the transfer's identity);
- ``accounts``: the followed ATAs and their signatures (sweeps, balance hints, finality);
- ``rpc``: JSON-RPC over HTTP (batches, the call budget, priorities, counts);
- ``source``: the ``ChainSource`` itself (head, blocks, transfers; the blocks' hashes).
"""

from pago.watcher.chains.solana.decode import Credit, DecodedTx, decode_transaction
from pago.watcher.chains.solana.rpc import CallBudget, PriorityGate, RpcStats, SolanaNode
from pago.watcher.chains.solana.source import SolanaSource

__all__ = [
    "CallBudget",
    "Credit",
    "DecodedTx",
    "PriorityGate",
    "RpcStats",
    "SolanaNode",
    "SolanaSource",
    "decode_transaction",
]
