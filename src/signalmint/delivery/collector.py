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
generation's count is back near where it was, and the reference cycles a round leaves
(cancelled waits, exceptions and their frames) waited minutes for a collection, those promoted
meanwhile about half an hour for a full one, each new cycle taking fresh memory: in a soak at
200 signals/s a worker's full collections found 16,000-17,000 garbage objects and its RSS grew
about 6% in an hour. :class:`IdleCollections` collects everything at the moments a worker goes
idle, at most every :data:`IDLE_EVERY` seconds; :meth:`IdleCollections.start` first moves what
is alive when the worker starts (modules, the store, its pools) out of the collector's sight
(``gc.freeze``, as the web app does at start-up), so such a collection walks only what the
worker made since (a few milliseconds, not 30).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["IDLE_EVERY", "ROUND_THRESHOLD", "IdleCollections", "fewer_collections"]

#: Net container allocations between two young collections while a round runs.
ROUND_THRESHOLD: Final = 100_000

#: Seconds between two collections made when a worker goes idle.
IDLE_EVERY: Final = 5.0

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
    """Full collections when a worker goes idle, at most every :data:`IDLE_EVERY` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.made = 0  # collections made so far

    def start(self) -> None:
        """What is alive now (start-up) is never collected again: later collections skip it."""
        gc.collect()
        gc.freeze()

    def idle(self) -> bool:
        """Collect if the last collection is :data:`IDLE_EVERY` seconds old; whether it did."""
        now = self.clock()
        if now - self.last < IDLE_EVERY:
            return False
        self.last = now
        self.made += 1
        gc.collect()
        return True
