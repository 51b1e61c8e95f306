"""The garbage collector during delivery rounds: young collections less often.

A round keeps a few dozen container objects per claimed row alive until it ends (the row,
its endpoint, the subscriber's view, the message, its outcome...). With CPython's default
thresholds (a young collection every 700 net allocations) those survivors push the older
generations over their limits again and again: on a 10,000-endpoint fan-out about a quarter
of the worker's CPU went to full collections that found next to nothing, since the round's
objects are freed by reference counting when it ends. While at least one round runs, the
young generation's threshold is raised to :data:`ROUND_THRESHOLD` (the older generations
keep theirs); the previous thresholds come back when the last running round ends. Cyclic
garbage is still collected during a round, just in fewer, larger passes. The threshold is
about what a 5,000-row round keeps alive at its peak: a collection costs in proportion to the
young objects it finds alive, so one that comes after the round's objects were freed finds few
(at 20,000 a 10,000-endpoint fan-out still spent about a tenth of its CPU collecting).

The other side of it: a round's allocations and frees net out, so once a round ends the young
generation's count is back near where it was, and the few reference cycles a round leaves
(cancelled waits, exceptions and their frames) wait minutes for a collection; those that met
one while still in use went to the oldest generation, which a long-running worker collected
about every half hour. Meanwhile each new cycle took fresh memory: a worker's RSS grew about 6%
in an hour's soak. :class:`IdleCollections` collects at the moments a worker goes idle
instead: the young and middle generations at most every :data:`IDLE_YOUNG_EVERY` seconds
(what is young then is mostly garbage: cheap), everything at most every :data:`IDLE_FULL_EVERY`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["IDLE_FULL_EVERY", "IDLE_YOUNG_EVERY", "ROUND_THRESHOLD", "IdleCollections", "fewer_collections"]

#: Net container allocations between two young collections while a round runs.
ROUND_THRESHOLD: Final = 100_000

#: Seconds between collections of the young and middle generations when a worker goes idle.
IDLE_YOUNG_EVERY: Final = 1.0
#: Seconds between full collections when a worker goes idle.
IDLE_FULL_EVERY: Final = 60.0

_rounds = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young generation's threshold while the block runs (rounds may overlap).

    >>> before = gc.get_threshold()
    >>> with fewer_collections():
    ...     gc.get_threshold()[0] >= ROUND_THRESHOLD
    True
    >>> gc.get_threshold() == before
    True
    """
    global _rounds, _saved
    if _rounds == 0:
        _saved = gc.get_threshold()
        if _saved[0] < ROUND_THRESHOLD:
            gc.set_threshold(ROUND_THRESHOLD, *_saved[1:])
    _rounds += 1
    try:
        yield
    finally:
        _rounds -= 1
        if _rounds == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None


class IdleCollections:
    """Garbage collections when a worker goes idle, at most every so often (see the module)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.young_at = self.full_at = clock()
        self.young = self.full = 0  # collections made so far

    def idle(self) -> int | None:
        """Collect what is due now; the generation collected (None: nothing was due)."""
        now = self.clock()
        if now - self.full_at >= IDLE_FULL_EVERY:
            self.full_at = self.young_at = now
            self.full += 1
            gc.collect()
            return 2
        if now - self.young_at >= IDLE_YOUNG_EVERY:
            self.young_at = now
            self.young += 1
            gc.collect(1)
            return 1
        return None
