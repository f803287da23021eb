"""The pure parts of the core, in microseconds: watch set, reorg ring, range sizer, endpoint
selection, stages, retry logging and settings. (Everything with I/O is tested against real
servers beside.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pago.watcher.core.model import BlockRef, ChainHead
from pago.watcher.core.ranges import RangeSizer
from pago.watcher.core.reorg import BlockRing, ForkDetected
from pago.watcher.core.rpc import Backoff, EndpointBehind, EndpointPool, RangeTooLarge
from pago.watcher.core.stages import StagePolicy
from pago.watcher.core.throttle import Failures
from pago.watcher.core.watch_set import WatchSet
from pago.watcher.settings import WatcherSettings

# Few distinct keys, so that collisions, deletions in clusters and growth all happen.
KEYS = st.binary(min_size=20, max_size=20).map(lambda b: b[:2] + bytes(18))


class WatchSetModel(RuleBasedStateMachine):
    """The table against a plain dict: same membership, values and size after any sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.table = WatchSet(20, capacity=4)
        self.model: dict[bytes, int] = {}

    @rule(key=KEYS, until=st.integers(0, 2**32 - 1))
    def add(self, key: bytes, until: int) -> None:
        assert self.table.add(key, until) == (key not in self.model)
        self.model[key] = until

    @rule(key=KEYS)
    def discard(self, key: bytes) -> None:
        assert self.table.discard(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(before=st.integers(0, 2**32), budget=st.integers(1, 64))
    def evict(self, before: int, budget: int) -> None:
        self.table.evict_expired(before, budget)
        # A partial sweep removes some expired keys; never an unexpired one.
        for key in [k for k in self.model if k not in self.table]:
            assert self.model.pop(key) < before

    @invariant()
    def same(self) -> None:
        assert len(self.table) == len(self.model)
        assert set(self.table) == set(self.model)
        for key, until in self.model.items():
            assert self.table.until(key) == until


TestWatchSetModel = WatchSetModel.TestCase
TestWatchSetModel.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


class TestWatchSet:
    def test_a_million_addresses_fit_in_the_budget(self) -> None:
        table = WatchSet(20, capacity=1_000_000)
        assert table.nbytes <= 60 * 2**20, "2^21 slots × 24 bytes + a 2 MiB map"

    def test_wrong_sized_keys_are_not_members(self) -> None:
        table = WatchSet(20)
        table.add(bytes(20), 1)
        assert bytes(19) not in table
        assert "0x" + "00" * 20 not in table
        with pytest.raises(ValueError, match="20 bytes"):
            table.add(bytes(32), 1)

    def test_a_full_sweep_evicts_every_expired_key(self) -> None:
        table = WatchSet(20)
        for i in range(1000):
            table.add(i.to_bytes(20, "big"), 100 if i % 2 else 300)
        removed = sum(table.evict_expired(200, budget=64) for _ in range(64))
        assert removed == 500
        assert all(table.until(k) == 300 for k in table)


def _chain(start: int, n: int, fork: str = "a") -> list[BlockRef]:
    refs, parent = [], f"{fork}{start - 1}"
    for number in range(start, start + n):
        refs.append(BlockRef(number, f"{fork}{number}", parent))
        parent = f"{fork}{number}"
    return refs


class TestBlockRing:
    def test_extends_and_keeps_the_newest(self) -> None:
        ring = BlockRing(capacity=5)
        ring.extend(_chain(10, 4))
        ring.extend(_chain(13, 4))  # repeats the tip, then continues
        assert ring.numbers() == [12, 13, 14, 15, 16]

    def test_a_block_that_does_not_continue_the_tip_is_a_fork(self) -> None:
        ring = BlockRing(capacity=10)
        ring.extend(_chain(10, 5))
        other = [BlockRef(15, "b15", "b14")]
        with pytest.raises(ForkDetected):
            ring.extend(other)
        with pytest.raises(ForkDetected):
            ring.extend([BlockRef(14, "b14", "a13")])  # the tip itself was replaced
        assert ring.numbers() == [10, 11, 12, 13, 14], "nothing appended on a fork"

    def test_fork_point_is_the_newest_shared_block(self) -> None:
        ring = BlockRing(capacity=10)
        ring.extend(_chain(10, 6))
        now = [*_chain(10, 3), *_chain(13, 4, fork="b")]
        now[3] = BlockRef(13, "b13", "a12")
        assert ring.fork_point(now) == 12
        assert ring.fork_point(_chain(10, 6, fork="c")) is None
        ring.truncate_after(12)
        assert ring.numbers() == [10, 11, 12]

    def test_skipped_slots_link_by_parent_hash(self) -> None:
        ring = BlockRing(capacity=10)
        ring.extend([BlockRef(1, "h1", "h0"), BlockRef(4, "h4", "h1"), BlockRef(5, "h5", "h4")])
        ring.extend([BlockRef(9, "h9", "h5")])
        assert ring.numbers() == [1, 4, 5, 9]


class TestRangeSizer:
    def test_halves_on_refusal_and_grows_while_calm(self) -> None:
        sizer = RangeSizer(initial=1000, maximum=2000)
        assert sizer.refused(1000) == 500
        sizer.succeeded(500, seconds=0.1)
        assert sizer.size == 750
        for _ in range(10):
            sizer.succeeded(sizer.size, seconds=0.1)
        assert sizer.size == 2000

    def test_shrinks_when_slow_and_never_below_the_minimum(self) -> None:
        sizer = RangeSizer(initial=8, maximum=100, calm_seconds=1.0)
        sizer.succeeded(8, seconds=5.0)
        assert sizer.size == 6
        for _ in range(10):
            sizer.refused(sizer.size)
        assert sizer.size == 1


class TestFailures:
    def test_logs_the_first_failure_then_every_nth(self) -> None:
        failures = Failures(every=10)
        logged = [n for n in range(1, 31) if failures.failed()]
        assert logged == [1, 10, 20, 30]
        assert failures.count == 30

    def test_a_success_starts_a_new_streak(self) -> None:
        failures = Failures(every=30)
        for _ in range(5):
            failures.failed()
        failures.reset()
        assert failures.failed()
        assert failures.count == 1


@dataclass
class FakeNode:
    """An RPC client double at the true boundary (the network): a head and a health switch."""

    name: str
    head: int
    up: bool = True
    calls: list[str] = field(default_factory=list)


async def _head(node: FakeNode) -> int:
    if not node.up:
        raise ConnectionError(node.name)
    return node.head


def _pool(*nodes: FakeNode, **options: object) -> EndpointPool[FakeNode]:
    clients = [(f"http://{n.name}:8545/key", n) for n in nodes]
    options = {"backoff": Backoff(base=0.001, cap=0.01), **options}
    return EndpointPool.of("ETHEREUM", clients, **options)


class TestEndpointPool:
    async def test_the_primary_serves_while_it_is_healthy(self) -> None:
        a, b = FakeNode("a", 100), FakeNode("b", 100)
        pool = _pool(a, b)
        await pool.refresh_heads(_head)

        async def op(node: FakeNode) -> str:
            node.calls.append("x")
            if not node.up:
                raise ConnectionError(node.name)
            return node.name

        assert await pool.call(op, method="m") == "a"
        a.up = False
        assert await pool.call(op, method="m") == "b"
        a.up = True
        await asyncio.sleep(0.02)  # the primary's cooldown passes
        assert await pool.call(op, method="m") == "a", "traffic returns to the primary"

    async def test_a_range_goes_only_to_a_node_that_has_its_end(self) -> None:
        behind, ahead = FakeNode("behind", 90), FakeNode("ahead", 100)
        pool = _pool(behind, ahead)
        assert await pool.refresh_heads(_head) == 100

        async def op(node: FakeNode) -> str:
            return node.name

        assert await pool.call(op, method="getLogs", min_head=95) == "ahead"
        with pytest.raises(EndpointBehind):
            await pool.call(op, method="getLogs", min_head=101)

    async def test_behind_and_frozen_nodes_are_stale(self) -> None:
        now = [0.0]
        a, b = FakeNode("a", 100), FakeNode("b", 100)
        pool = _pool(a, b, stale_blocks=5, stale_after=10.0, clock=lambda: now[0])
        await pool.refresh_heads(_head)
        b.head = 110
        await pool.refresh_heads(_head)
        assert [e.stale for e in pool.endpoints] == [True, False], "a is 10 behind"
        a.head = 108
        await pool.refresh_heads(_head)
        assert [e.stale for e in pool.endpoints] == [False, False]
        now[0] = 20.0
        b.head = 111
        await pool.refresh_heads(_head)
        assert pool.endpoints[0].frozen, "a has not moved for 20 s while b has"
        now[0] = 40.0
        await pool.refresh_heads(_head)
        assert pool.chain_stalled, "nobody moves: the chain (or every node) stopped"
        assert not any(e.frozen for e in pool.endpoints)

    async def test_a_refusal_is_not_the_endpoints_fault(self) -> None:
        a = FakeNode("a", 100)
        pool = _pool(a)

        async def op(node: FakeNode) -> str:
            raise RangeTooLarge("too many results")

        with pytest.raises(RangeTooLarge):
            await pool.call(op, method="getLogs")
        assert pool.endpoints[0].failures == 0

    def test_labels_never_carry_secrets(self) -> None:
        pool = _pool(FakeNode("a", 1), FakeNode("a", 1))
        assert [e.label for e in pool.endpoints] == ["http://a:8545", "http://a:8545#2"]


class TestStages:
    @given(latest=st.integers(0, 10**9), block=st.integers(0, 10**9), depth=st.integers(0, 200))
    def test_confirmed_exactly_at_the_depth(self, latest: int, block: int, depth: int) -> None:
        policy = StagePolicy(confirmations=depth)
        head = ChainHead(latest)
        confirmed = block <= policy.confirmable(head)
        assert confirmed == (policy.confirmations_of(block, head) >= depth and block <= latest)

    def test_finalized_caps_at_latest(self) -> None:
        policy = StagePolicy(confirmations=12, use_finalized=True)
        assert policy.confirmable(ChainHead(100, finalized=36)) == 36
        with pytest.raises(ValueError, match="finalized"):
            policy.confirmable(ChainHead(100))


class TestSettings:
    def test_needs_no_database(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        s = WatcherSettings.model_validate(
            {
                "network": "BASE",
                "mode": "live",
                "kafka_bootstrap_servers": "k:9092",
                "redis_url": "redis://r",
                "PAGO_WATCHER_RPC_URLS": "https://a.example/KEY, https://b.example",
            }
        )
        assert s.urls() == ("https://a.example/KEY", "https://b.example")
        assert not hasattr(s, "database_url")

    def test_renewal_must_fit_the_lease(self) -> None:
        with pytest.raises(ValueError, match="LEASE_RENEW"):
            WatcherSettings.model_validate(
                {
                    "network": "BASE",
                    "mode": "live",
                    "kafka_bootstrap_servers": "k:9092",
                    "redis_url": "redis://r",
                    "lease_ttl": 5,
                    "lease_renew": 3,
                }
            )
