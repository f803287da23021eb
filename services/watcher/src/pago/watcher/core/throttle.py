"""How often a retried operation says that it is failing: its first failure, then every n-th.

The scanner's loops retry until they succeed (a range is never skipped) and the endpoint pool
tries the next endpoint; one line per attempt would flood the log while a node is down (a head
poll every second is 3,600 lines an hour). A streak's first failure is logged, so an outage
shows at once, and then every n-th, so a long one still shows that it lasts.
"""

from __future__ import annotations

from dataclasses import dataclass


def worth_logging(failures: int, every: int) -> bool:
    """Whether the ``failures``-th consecutive failure is logged (1, every, 2 × every, …)."""
    return failures == 1 or failures % every == 0


@dataclass(slots=True)
class Failures:
    """The consecutive failures of one retried operation (its backoff reads ``count`` too)."""

    every: int
    """Log the first failure of a streak, then every ``every``-th."""
    count: int = 0

    def failed(self) -> bool:
        """Count one more failure; True if this one is to be logged."""
        self.count += 1
        return worth_logging(self.count, self.every)

    def reset(self) -> None:
        """A success ends the streak."""
        self.count = 0
