"""A TRON chain in memory: signed-looking transactions, hash-linked blocks, forks.

What makes it realistic enough to test a watcher against (and what it leaves out):

- Blocks come every 3 s of chain time from a rotating set of 27 witnesses; ``blockID`` is the
  height ‖ 24 bytes of the header hash, ``parentHash`` chains them, ``txTrieRoot`` is a Merkle
  root; the solidified block trails the head by ``solid_lag`` (19, as on mainnet).
- Transactions are ``TriggerSmartContract`` calls (TRC-20 ``transfer``/``approve``, router
  payments with two logs) and ``TransferContract`` (TRX), with ``raw_data_hex`` and a ``txID``
  that is its SHA-256; receipts carry energy and bandwidth figures of the size mainnet shows.
- Failed calls (``REVERT``, ``OUT_OF_ENERGY``) keep their fee and lose their logs.
- Random traffic (``noise``) fills blocks: payments between strangers in the registry token and
  in a token outside the registry, approvals, TRX, failures.
- No state: balances are never checked (a transfer of any amount succeeds unless told to fail)
  and signatures are random bytes.

A fork (``fork``) replaces the newest blocks by a longer branch from the same parent, as DPoS
does when a witness's blocks lose to a longer chain; its transactions are included again unless
dropped, so the same ``txID`` may land in another block.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.support.tron_node import encoding as enc

BLOCK_MS = 3_000
"""TRON produces a block every 3 s."""
WITNESSES = 27
"""Super representatives taking turns."""
SOLID_LAG = 19
"""Blocks between the head and the solidified block (2/3 of the 27 witnesses + 1)."""
BLOCK_VERSION = 34
ENERGY_PRICE = 100
"""Sun burned per unit of energy (since 2024)."""
TRC20_TRANSFER_ENERGY = (31_895, 64_895)
"""Energy of a USDT transfer to a holder, and to a fresh address (its storage slot is new)."""


@dataclass(frozen=True, slots=True)
class Log:
    address: bytes
    """The emitting contract's 20 bytes."""
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Tx:
    """One transaction with its execution result (what ``gettransactioninfo*`` reports)."""

    txid: str
    raw_hex: str
    kind: str
    """``TriggerSmartContract`` or ``TransferContract``."""
    owner: bytes
    target: bytes
    """The called contract, or the TRX recipient."""
    call_data: bytes
    amount: int
    """TRX in sun (``TransferContract``); 0 for a call."""
    ref_block_bytes: str
    ref_block_hash: str
    expiration: int
    timestamp: int
    fee_limit: int
    signature: str
    result: str
    """``SUCCESS`` or the VM's failure (``REVERT``, ``OUT_OF_ENERGY``)."""
    logs: tuple[Log, ...]
    energy: int
    net: int
    contract_result: str

    @property
    def success(self) -> bool:
        return self.result == "SUCCESS"


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    id: str
    parent: str
    timestamp: int
    tx_trie_root: str
    witness: bytes
    witness_signature: str
    txs: tuple[Tx, ...]


@dataclass
class TronChain:
    """The chain every endpoint of a test serves (one object, many ``TronNode`` servers)."""

    tokens: Sequence[bytes] = ()
    """Registry token contracts (20 bytes each): noise pays in the first one."""
    seed: int = 0
    noise: int = 3
    """Random transactions added to each mined block."""
    solid_lag: int = SOLID_LAG
    genesis_ms: int | None = None
    """Chain time of block 0 (ms); by default an hour ago, so a few hundred blocks stay in the
    past."""
    blocks: list[Block] = field(default_factory=list, init=False)
    mempool: list[Tx] = field(default_factory=list, init=False)
    _by_txid: dict[str, tuple[int, int]] = field(default_factory=dict, init=False)
    _rng: random.Random = field(init=False)
    _strangers: list[bytes] = field(default_factory=list, init=False)
    _fork_salt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.genesis_ms is None:
            self.genesis_ms = int(time.time()) * 1000 - 3_600_000
        self.other_token = self._rng.randbytes(20)
        """A TRC-20 token outside the registry (its transfers must never be reported)."""
        self.router = self._rng.randbytes(20)
        """A contract that pays out in registry tokens (a payment processor, a DEX)."""
        self._strangers = [self._rng.randbytes(20) for _ in range(64)]
        self._witnesses = [self._rng.randbytes(20) for _ in range(WITNESSES)]
        genesis_parent = enc.sha256(b"pago test chain %d" % self.seed)
        self.blocks.append(self._seal(0, genesis_parent.hex(), (), witness=self._witnesses[0]))

    # -- reading ---------------------------------------------------------------------------

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def solid_number(self) -> int:
        return max(0, self.head.number - self.solid_lag)

    def block(self, number: int) -> Block | None:
        return self.blocks[number] if 0 <= number < len(self.blocks) else None

    def by_id(self, block_id: str) -> Block | None:
        try:
            number = int(block_id[:16], 16)
        except ValueError:
            return None
        found = self.block(number)
        return found if found is not None and found.id == block_id else None

    def locate(self, txid: str) -> tuple[Block, Tx] | None:
        where = self._by_txid.get(txid)
        if where is None:
            return None
        block = self.blocks[where[0]]
        return block, block.txs[where[1]]

    def stranger(self) -> bytes:
        return self._rng.choice(self._strangers)

    # -- transactions ----------------------------------------------------------------------

    def _sign(
        self,
        kind: str,
        owner: bytes,
        target: bytes,
        *,
        call_data: bytes = b"",
        amount: int = 0,
        result: str = "SUCCESS",
        logs: Sequence[Log] = (),
        energy: int = 0,
        logs_despite_failure: bool = False,
    ) -> Tx:
        rng = self._rng
        ref = self.head
        timestamp = ref.timestamp + rng.randrange(1, BLOCK_MS)
        ref_block_bytes = (ref.number & 0xFFFF).to_bytes(2, "big")
        ref_block_hash = bytes.fromhex(ref.id)[8:16]
        expiration = timestamp + 60_000
        if kind == "TriggerSmartContract":
            value = enc.trigger_smart_contract(owner, target, call_data)
            kind_id, fee_limit = enc.TRIGGER_SMART_CONTRACT, 100_000_000
        else:
            value = enc.transfer_contract(owner, target, amount)
            kind_id, fee_limit = enc.TRANSFER_CONTRACT, 0
        raw = enc.transaction_raw(
            ref_block_bytes=ref_block_bytes,
            ref_block_hash=ref_block_hash,
            expiration=expiration,
            contracts=[enc.contract(kind_id, kind, value)],
            timestamp=timestamp,
            fee_limit=fee_limit,
        )
        ok = result == "SUCCESS"
        return Tx(
            txid=enc.sha256(raw).hex(),
            raw_hex=raw.hex(),
            kind=kind,
            owner=owner,
            target=target,
            call_data=call_data,
            amount=amount,
            ref_block_bytes=ref_block_bytes.hex(),
            ref_block_hash=ref_block_hash.hex(),
            expiration=expiration,
            timestamp=timestamp,
            fee_limit=fee_limit,
            signature=rng.randbytes(65).hex(),
            result=result,
            # A failed call's events are rolled back with its state — as a rule: java-tron's
            # docs still tell clients to check a receipt's result before reading its logs.
            logs=tuple(logs) if ok or logs_despite_failure else (),
            energy=energy,
            net=len(raw) + 65 + 64,  # bytes on the wire: raw, signature, protobuf overhead
            contract_result=(enc.word(1).hex() if ok and call_data else ""),
        )

    def _queue(self, tx: Tx) -> Tx:
        self.mempool.append(tx)
        return tx

    def trc20_transfer(
        self,
        token: bytes,
        to: bytes,
        amount: int,
        *,
        sender: bytes | None = None,
        result: str = "SUCCESS",
        logs_despite_failure: bool = False,
    ) -> Tx:
        """Queue ``token.transfer(to, amount)`` from ``sender`` for the next block; with a
        failing ``result``, its Transfer log is kept if ``logs_despite_failure``."""
        tx = self._trc20(token, to, amount, sender or self.stranger(), result, logs_despite_failure)
        return self._queue(tx)

    def _trc20(
        self,
        token: bytes,
        to: bytes,
        amount: int,
        sender: bytes,
        result: str,
        logs_despite_failure: bool = False,
    ) -> Tx:
        data = enc.TRANSFER_SELECTOR + enc.word(to) + enc.word(amount)
        log = Log(token, (enc.TRANSFER_TOPIC, enc.word(sender), enc.word(to)), enc.word(amount))
        energy = self._rng.choice(TRC20_TRANSFER_ENERGY)
        if result == "OUT_OF_ENERGY":
            energy = 14_900
        return self._sign(
            "TriggerSmartContract",
            sender,
            token,
            call_data=data,
            result=result,
            logs=[log],
            energy=energy,
            logs_despite_failure=logs_despite_failure,
        )

    def router_payment(self, token: bytes, to: bytes, amount: int) -> Tx:
        """Queue a call to ``router`` that pays ``to`` in ``token``: two logs, the payment
        second, sent by the router (how exchanges and payment contracts pay out)."""
        payer = self.stranger()
        data = bytes.fromhex("ce3f2f1b") + enc.word(to) + enc.word(amount)
        logs = [
            # The router's own event (its topic needs no keccak: nothing decodes it).
            Log(self.router, (enc.sha256(b"Payout(address)"), enc.word(payer)), b""),
            Log(token, (enc.TRANSFER_TOPIC, enc.word(self.router), enc.word(to)), enc.word(amount)),
        ]
        return self._queue(
            self._sign(
                "TriggerSmartContract",
                payer,
                self.router,
                call_data=data,
                logs=logs,
                energy=52_311,
            )
        )

    def approve(self, token: bytes, spender: bytes, amount: int) -> Tx:
        """Queue ``token.approve(spender, amount)``: an ``Approval`` log, no transfer."""
        return self._queue(self._approval(token, self.stranger(), spender, amount))

    def _approval(self, token: bytes, owner: bytes, spender: bytes, amount: int) -> Tx:
        data = enc.APPROVE_SELECTOR + enc.word(spender) + enc.word(amount)
        log = Log(token, (enc.APPROVAL_TOPIC, enc.word(owner), enc.word(spender)), enc.word(amount))
        return self._sign(
            "TriggerSmartContract", owner, token, call_data=data, logs=[log], energy=22_675
        )

    def trx_transfer(self, to: bytes, sun: int) -> Tx:
        return self._queue(self._sign("TransferContract", self.stranger(), to, amount=sun))

    def _noise(self, count: int) -> list[Tx]:
        rng = self._rng
        out: list[Tx] = []
        for _ in range(count):
            roll = rng.random()
            to = self.stranger()
            amount = rng.randrange(1, 5_000) * 10**6 + rng.randrange(10**6)
            if roll < 0.45 and self.tokens:
                out.append(self._trc20(self.tokens[0], to, amount, self.stranger(), "SUCCESS"))
            elif roll < 0.6:
                out.append(self._trc20(self.other_token, to, amount, self.stranger(), "SUCCESS"))
            elif roll < 0.7 and self.tokens:
                failure = rng.choice(("REVERT", "OUT_OF_ENERGY"))
                out.append(self._trc20(self.tokens[0], to, amount, self.stranger(), failure))
            elif roll < 0.8 and self.tokens:
                out.append(self._approval(self.tokens[0], self.stranger(), to, amount))
            else:
                out.append(self._sign("TransferContract", self.stranger(), to, amount=amount))
        return out

    # -- blocks ----------------------------------------------------------------------------

    def _seal(self, number: int, parent: str, txs: Sequence[Tx], *, witness: bytes) -> Block:
        timestamp = (self.genesis_ms or 0) + BLOCK_MS * number
        root = enc.merkle_root([bytes.fromhex(t.txid) for t in txs])
        header = enc.block_header_raw(
            timestamp=timestamp,
            tx_trie_root=root,
            parent_hash=bytes.fromhex(parent),
            number=number,
            witness_address=enc.PREFIX + witness,
            version=BLOCK_VERSION,
        )
        return Block(
            number=number,
            id=enc.block_id(number, header).hex(),
            parent=parent,
            timestamp=timestamp,
            tx_trie_root=root.hex(),
            witness=witness,
            witness_signature=self._rng.randbytes(65).hex(),
            txs=tuple(txs),
        )

    def _append(self, txs: Sequence[Tx], *, witness_shift: int = 0) -> Block:
        number = self.head.number + 1
        witness = self._witnesses[(number + witness_shift) % WITNESSES]
        block = self._seal(number, self.head.id, txs, witness=witness)
        self.blocks.append(block)
        for i, tx in enumerate(block.txs):
            self._by_txid[tx.txid] = (number, i)
        return block

    def mine(self, count: int = 1, *, noise: int | None = None) -> list[Block]:
        """Seal ``count`` blocks; the first takes the mempool. Each gets ``noise`` random
        transactions (the chain's default when None), shuffled in with the queued ones."""
        made: list[Block] = []
        for _ in range(count):
            txs = self.mempool + self._noise(self.noise if noise is None else noise)
            self.mempool = []
            self._rng.shuffle(txs)
            made.append(self._append(txs))
        return made

    def mine_payments(
        self, count: int, per_block: int, recipients: Sequence[bytes], token: bytes
    ) -> None:
        """Seal ``count`` blocks of ``per_block`` TRC-20 transfers each to random
        ``recipients`` (the benchmark's chain), with the chain's usual noise on top."""
        rng = self._rng
        for _ in range(count):
            for _ in range(per_block):
                amount = rng.randrange(1, 10**9)
                self.mempool.append(
                    self._trc20(token, rng.choice(recipients), amount, self.stranger(), "SUCCESS")
                )
            self.mine()

    def fork(
        self,
        depth: int,
        *,
        drop: Iterable[str] = (),
        length: int | None = None,
        allow_below_solid: bool = False,
    ) -> list[Block]:
        """Replace the newest ``depth`` blocks by a branch of ``length`` (default depth + 1)
        new blocks from the same parent, signed by other witnesses. Their transactions go into
        the branch again (into its first block), except the ids in ``drop``. Returns the
        blocks that were replaced."""
        if not 0 < depth < len(self.blocks):
            raise ValueError(f"cannot replace {depth} of {len(self.blocks)} blocks")
        if self.head.number - depth < self.solid_number and not allow_below_solid:
            raise ValueError("a fork below the solidified block does not happen on TRON")
        dropped = set(drop)
        gone = self.blocks[-depth:]
        del self.blocks[-depth:]
        for block in gone:
            for tx in block.txs:
                self._by_txid.pop(tx.txid, None)
        again = [tx for b in gone for tx in b.txs if tx.txid not in dropped]
        self.mempool = [*again, *self.mempool]
        self._fork_salt += 1
        for i in range(depth + 1 if length is None else length):
            txs = self.mempool if i == 0 else self._noise(self.noise)
            self.mempool = []
            self._append(txs, witness_shift=self._fork_salt * 7)
        return gone
