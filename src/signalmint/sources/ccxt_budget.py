"""The ``ccxt`` source's rate limiter: the exchange's request weight per minute, spent in bursts.

ccxt prices every REST endpoint in units of its ``rateLimit`` (Binance: 50 ms; a klines
request costs 0.4, i.e. weight 2 of Binance's 6,000 a minute) and by default spaces requests
out with a leaky bucket of capacity 1: 1,000 klines requests take 20 s, one every 20 ms, and
even with ``rateLimit: 0`` each request waits a millisecond sleep on the bucket. The
exchange's own rule is a budget per minute, so a round of every symbol at a candle's close
fits in it and may go at once.

:class:`RateBudget` replaces ccxt's throttler (``exchange.throttler``) with that rule, as
ccxt's ``rollingWindow`` algorithm states it: the requests admitted in any ``window``
(60 s) cost at most ``window / rateLimit`` units (Binance: 1,200, i.e. 6,000 weight). A
request within the budget goes at once, without sleeping or yielding; one over it waits
(in arrival order) until enough of the window's spending expires. Time is the source's
clock, so a test or benchmark running on compressed time spends a compressed minute's
budget. ``rateLimit: 0`` means no limit at all. The bookkeeping is a deque and a running
sum: O(1) a request, where ccxt's rolling window rescans the whole window every time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Generator

__all__ = ["WINDOW", "RateBudget"]

#: Seconds over which the budget is counted (ccxt's ``rollingWindowSize``).
WINDOW = 60.0


class RateBudget:
    """At most ``limit`` cost units admitted per ``window`` seconds of ``clock`` (None: no limit)."""

    def __init__(
        self,
        limit: float | None,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        window: float = WINDOW,
    ) -> None:
        self.limit, self.window = limit, window
        self.clock, self.sleep = clock, sleep
        self.spent = 0.0  # units admitted within the window
        self._admitted: deque[tuple[float, float]] = deque()  # (clock, cost), oldest first
        self._queue: asyncio.Lock | None = None  # waiters go in arrival order
        self.waits = 0  # requests that had to wait for the budget

    @classmethod
    def for_exchange(
        cls, rate_limit_ms: float, *, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
    ) -> RateBudget:
        """The budget ccxt's ``rateLimit`` (milliseconds per cost unit) stands for."""
        limit = WINDOW * 1000 / rate_limit_ms if rate_limit_ms > 0 else None
        return cls(limit, clock=clock, sleep=sleep)

    def _expire(self, now: float) -> None:
        admitted = self._admitted
        while admitted and admitted[0][0] <= now - self.window:
            self.spent -= admitted.popleft()[1]
        if not admitted:
            self.spent = 0.0  # no drift from float sums

    def _try(self, cost: float) -> bool:
        now = self.clock()
        self._expire(now)
        if self.spent + cost <= self.limit or not self._admitted:  # type: ignore[operator]
            self._admitted.append((now, cost))
            self.spent += cost
            return True
        return False

    def __call__(self, cost: float | None = None) -> Awaitable[None]:
        """What ccxt awaits before a request of ``cost`` units (its ``throttle(cost)``)."""
        units = 1.0 if cost is None else float(cost)
        if self.limit is None or ((self._queue is None or not self._queue.locked()) and self._try(units)):
            return _DONE
        return self._wait(units)

    async def _wait(self, cost: float) -> None:
        if self._queue is None:
            self._queue = asyncio.Lock()
        async with self._queue:
            self.waits += 1
            while not self._try(cost):
                oldest = self._admitted[0][0]
                await self.sleep(max(oldest + self.window - self.clock(), 0.0))


class _Done:
    """An awaitable that is already done (no coroutine, no event-loop round trip)."""

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that returns at once


_DONE = _Done()
