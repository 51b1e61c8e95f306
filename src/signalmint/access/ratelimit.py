"""A per-key token bucket for the API, and the HTTP headers that describe it.

Each key (an API key id, a client address...) owns a bucket of ``burst`` tokens
that starts full and refills continuously at ``rate`` tokens per second, never
above ``burst``. A request costing ``cost`` tokens is allowed when the bucket
holds that many; a refused request takes nothing, so a client that backs off
for ``retry_after`` seconds is served.

Headers follow draft-ietf-httpapi-ratelimit-headers-06, "RateLimit header
fields for HTTP", in the form most servers and client libraries implement
today: three separate fields ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (delta seconds), plus ``RateLimit-Policy: {burst};w={window}``
and, on refusal, ``Retry-After`` (RFC 9110). Later revisions of the draft (-07
on) fold the three fields into one structured ``RateLimit`` field; few clients
read that yet, so we emit the earlier form.

>>> now = [0.0]
>>> limiter = TokenBucketLimiter(clock=lambda: now[0])
>>> [limiter.check("key", rate=1.0, burst=2).allowed for _ in range(3)]
[True, True, False]
>>> refused = limiter.check("key", rate=1.0, burst=2)
>>> refused.retry_after
1.0
>>> now[0] += refused.retry_after
>>> limiter.check("key", rate=1.0, burst=2).allowed
True
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateDecision", "TokenBucketLimiter"]

# Float slack, in tokens, when comparing a bucket with a cost: waiting exactly
# ``retry_after`` must admit the next request despite rounding in the clock sum.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer to one :meth:`TokenBucketLimiter.check`.

    ``reset`` is the number of seconds until the bucket is full again;
    ``retry_after`` the seconds until the refused request would be allowed
    (``None`` when allowed). ``rate`` is the refill rate, kept so that
    :meth:`headers` can state the policy window.
    """

    allowed: bool
    limit: int
    remaining: int
    reset: float
    retry_after: float | None
    rate: float

    def headers(self) -> dict[str, str]:
        """HTTP response headers describing this decision.

        >>> refused = RateDecision(False, limit=10, remaining=0, reset=4.2, retry_after=0.4, rate=2.0)
        >>> for name, value in refused.headers().items():
        ...     print(f"{name}: {value}")
        RateLimit-Limit: 10
        RateLimit-Remaining: 0
        RateLimit-Reset: 5
        RateLimit-Policy: 10;w=5
        Retry-After: 1
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
            "RateLimit-Policy": f"{self.limit};w={math.ceil(self.limit / self.rate)}",
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class TokenBucketLimiter:
    """Token buckets per key, thread-safe, holding at most ``max_keys`` buckets.

    Past ``max_keys`` the least recently checked key is forgotten; it comes back
    with a full bucket, so keep ``max_keys`` above the number of keys active
    within one refill period (``burst / rate``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.clock = clock
        self.max_keys = max_keys
        # key -> [tokens, time of last update]; order is least recently used first.
        self._buckets: OrderedDict[str | int, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucketLimiter(clock={self.clock!r}, max_keys={self.max_keys!r})"

    def __len__(self) -> int:
        return len(self._buckets)

    async def acheck(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        """:meth:`check` for callers on the event loop (the shared limiters' interface)."""
        return self.check(key, rate, burst, cost)

    async def astart(self) -> None:
        """Nothing to open (the shared limiters' interface)."""

    async def aclose(self) -> None:
        """Nothing to close (the shared limiters' interface)."""

    def check(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them.

        ``rate`` (tokens per second) and ``burst`` may differ between calls for
        the same key, for instance after a plan change: the bucket keeps its
        tokens, capped at the new ``burst``.
        """
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number of tokens per second, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        if not 0 <= cost <= burst:
            raise ValueError(f"cost must be between 0 and burst ({burst}), not {cost}")
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[key] = [float(burst), now]
            else:
                self._buckets.move_to_end(key)
                # Never move a bucket's time backwards: a clock that steps back
                # would otherwise hand out the same refill twice.
                if now > bucket[1]:
                    bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
                    bucket[1] = now
                else:
                    bucket[0] = min(float(burst), bucket[0])
            tokens = bucket[0]
            allowed = tokens + _EPSILON >= cost
            if allowed:
                tokens = bucket[0] = max(0.0, tokens - cost)
        return RateDecision(
            allowed=allowed,
            limit=burst,
            remaining=math.floor(tokens + _EPSILON),
            reset=(burst - tokens) / rate,
            retry_after=None if allowed else (cost - tokens) / rate,
            rate=rate,
        )
