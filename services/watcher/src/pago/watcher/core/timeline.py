"""Find the block at a moment in time: where a late address's back-fill begins.

Block numbers are not a clock (slots skip, block times vary, a chain pauses), so the block at
a session's ``created_at`` is searched for in the chain's own headers: gallop back from the
head in doubling steps until a block at or before the moment, then bisect between the two.
Calls grow with the log of the distance — about 17 headers for a day of Ethereum (7,200
blocks), 25 for a day of Solana (216,000 slots) — and nothing older than needed is read, so a
provider that prunes old history is never asked for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

FIRST_STEP = 256
"""Blocks of the first step back from the head (doubles at every step)."""


async def block_at(
    when: datetime,
    high: int,
    time_of: Callable[[int], Awaitable[datetime]],
    *,
    floor: int = 0,
) -> int:
    """The newest block in ``[floor, high]`` whose time is at or before ``when`` (``floor``
    when even that one is later). ``time_of(n)``: the timestamp of block ``n`` (of the newest
    block at or below ``n`` on a chain that skips numbers). Block times never decrease."""
    if high <= floor or await time_of(high) <= when:
        return max(floor, high)
    later = high  # invariant: time_of(later) > when
    step = FIRST_STEP
    while True:
        probe = max(floor, later - step)
        if await time_of(probe) <= when:
            earlier = probe
            break
        if probe == floor:
            return floor
        later, step = probe, step * 2
    while later - earlier > 1:
        mid = (earlier + later) // 2
        if await time_of(mid) <= when:
            earlier = mid
        else:
            later = mid
    return earlier
