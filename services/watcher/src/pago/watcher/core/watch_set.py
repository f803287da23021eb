"""The watch set: which addresses this watcher reports transfers to, in about 50 bytes each.

A Python ``set`` of 1,000,000 ``bytes`` keys costs ~120 MB before any per-address data (a
53-byte object per key plus the table); this one stores fixed-width keys inline in one
``bytearray`` (open addressing, linear probing, load ≤ 0.5), so 1,000,000 EVM addresses take
2^21 slots × (20-byte key + 4-byte ``watch_until``) + a 2 MiB occupancy map ≈ 52 MB
(``make bench`` measures it). A lookup is one hash and usually one slice compare (~1 µs).

Keys are the chain's canonical address bytes (20 for EVM and TRON, 32 for Solana): a
``ChainSource`` turns text into keys and keys back into the spelling the api stores.
"""

from __future__ import annotations

from collections.abc import Iterator

_MAX_LOAD = 0.5
_UNTIL_MAX = 2**32 - 1


class WatchSet:
    """A set of ``key_size``-byte keys, each with a ``watch_until`` (unix seconds, uint32).

    Not thread-safe; the watcher touches it from its one event loop only.
    """

    __slots__ = ("_buf", "_cap", "_count", "_k", "_mask", "_s", "_sweep", "_used")

    def __init__(self, key_size: int, capacity: int = 1024) -> None:
        if key_size < 1:
            raise ValueError("key_size must be >= 1")
        self._k = key_size
        self._s = key_size + 4
        cap = 8
        while cap * _MAX_LOAD < capacity:
            cap *= 2
        self._alloc(cap)
        self._sweep = 0

    def _alloc(self, cap: int) -> None:
        self._cap = cap
        self._mask = cap - 1
        self._buf = bytearray(cap * self._s)
        self._used = bytearray(cap)
        self._count = 0

    @property
    def key_size(self) -> int:
        return self._k

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's two arrays (what grows with the number of addresses)."""
        return len(self._buf) + len(self._used)

    def __len__(self) -> int:
        return self._count

    def _find(self, key: bytes) -> int:
        """The slot holding ``key``, or ``-(free slot) - 1`` where it would go."""
        if len(key) != self._k:
            raise ValueError(f"a key is {self._k} bytes, not {len(key)}")
        mask, s, k, buf, used = self._mask, self._s, self._k, self._buf, self._used
        i = hash(key) & mask
        while used[i]:
            off = i * s
            if buf[off : off + k] == key:
                return i
            i = (i + 1) & mask
        return -i - 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes) or len(key) != self._k:
            return False
        return self._find(key) >= 0

    def until(self, key: bytes) -> int | None:
        """``watch_until`` of ``key`` (unix seconds), or None if it is not watched."""
        i = self._find(key)
        if i < 0:
            return None
        off = i * self._s + self._k
        return int.from_bytes(self._buf[off : off + 4], "little")

    def add(self, key: bytes, until: int) -> bool:
        """Watch ``key`` until ``until``; True if it was not watched before (else it updates)."""
        value = min(max(int(until), 0), _UNTIL_MAX).to_bytes(4, "little")
        i = self._find(key)
        if i >= 0:
            off = i * self._s + self._k
            self._buf[off : off + 4] = value
            return False
        if (self._count + 1) > self._cap * _MAX_LOAD:
            self._grow()
            i = self._find(key)
        slot = -i - 1
        off = slot * self._s
        self._buf[off : off + self._k] = key
        self._buf[off + self._k : off + self._s] = value
        self._used[slot] = 1
        self._count += 1
        return True

    def discard(self, key: bytes) -> bool:
        """Stop watching ``key``; True if it was watched."""
        i = self._find(key)
        if i < 0:
            return False
        self._delete_slot(i)
        return True

    def _delete_slot(self, i: int) -> None:
        # Backward-shift deletion: no tombstones, so lookups of absent keys stay short forever.
        mask, s, k, buf, used = self._mask, self._s, self._k, self._buf, self._used
        used[i] = 0
        self._count -= 1
        j = i
        while True:
            j = (j + 1) & mask
            if not used[j]:
                return
            off_j = j * s
            home = hash(bytes(buf[off_j : off_j + k])) & mask
            # The entry at j may move to i only if its home is not cyclically within (i, j].
            in_between = (i < home <= j) if i <= j else (home > i or home <= j)
            if in_between:
                continue
            off_i = i * s
            buf[off_i : off_i + s] = buf[off_j : off_j + s]
            used[i] = 1
            used[j] = 0
            i = j

    def _grow(self) -> None:
        old_buf, old_used, s, k = self._buf, self._used, self._s, self._k
        self._alloc(self._cap * 2)
        for slot in range(len(old_used)):
            if old_used[slot]:
                off = slot * s
                key = bytes(old_buf[off : off + k])
                until = int.from_bytes(old_buf[off + k : off + s], "little")
                self.add(key, until)

    def __iter__(self) -> Iterator[bytes]:
        """Every key (a snapshot per slot: adding or removing while iterating is undefined)."""
        buf, used, s, k = self._buf, self._used, self._s, self._k
        for slot in range(self._cap):
            if used[slot]:
                off = slot * s
                yield bytes(buf[off : off + k])

    def evict_expired(self, before: int, budget: int = 65_536) -> int:
        """Remove keys whose ``watch_until`` is earlier than ``before``, looking at ``budget``
        slots from where the last call stopped (so a sweep of 2^21 slots never stalls the loop).
        Returns how many were removed."""
        removed = 0
        s, k = self._s, self._k
        for _ in range(min(budget, self._cap)):
            slot = self._sweep % self._cap
            if self._used[slot]:
                off = slot * s + k
                if int.from_bytes(self._buf[off : off + 4], "little") < before:
                    # The backward shift may pull a later entry into this slot: look again.
                    self._delete_slot(slot)
                    removed += 1
                    continue
            self._sweep = slot + 1
        return removed
