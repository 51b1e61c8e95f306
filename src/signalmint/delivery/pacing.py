"""Rate pacing: delay sends so a receiver's limits are never hit.

A :class:`Pacer` spaces sends to one key (a Telegram chat, a mail domain...) at least
``per_key_interval`` seconds apart, and all sends together at most ``global_rate`` a second.
Callers ``await pacer.wait(key)`` right before each send; when a receiver still answers
"too many requests", :meth:`Pacer.backoff` (one key) or :meth:`Pacer.backoff_all` holds
later sends back, including those already waiting.

Waiters reserve their turn before sleeping, so concurrent senders to one key queue up in
arrival order instead of waking together, and the spacing is measured between the moments
``wait`` actually returned. A key is forgotten once its reservations and backoff lie in the
past: memory is bounded by the keys with a pending send or an active backoff, not by every
key ever seen.

>>> import asyncio
>>> now = [0.0]
>>> async def sleep(seconds: float) -> None:
...     now[0] += seconds
>>> pacer = Pacer(per_key_interval=1.0, global_rate=10.0, clock=lambda: now[0], sleep=sleep)
>>> async def sends(keys: str) -> list[float]:
...     times = []
...     for key in keys:
...         await pacer.wait(key)
...         times.append(round(now[0], 3))
...     return times
>>> asyncio.run(sends("aab"))
[0.0, 1.0, 1.1]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

__all__ = ["Pacer"]

_PRUNE_AT = 1024  # sweep forgotten keys once the table has grown past this and past twice its last size
_EPS = 1e-6  # timers may fire a hair early; never turn that into another full interval of waiting
_NEVER = -math.inf


@dataclass(slots=True)
class _Key:
    reserved: float = _NEVER  # earliest start for the next waiter that arrives
    last: float = _NEVER  # when the last send to this key was let through
    blocked: float = _NEVER  # end of this key's backoff


class Pacer:
    """At most one send per ``per_key_interval`` seconds to a key, ``global_rate`` a second in all.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests can run in virtual time.
    """

    def __init__(
        self,
        per_key_interval: float = 1.0,
        global_rate: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (per_key_interval >= 0 and math.isfinite(per_key_interval)):
            raise ValueError("per_key_interval must be a finite number of seconds >= 0")
        if not global_rate > 0:
            raise ValueError("global_rate must be > 0 (sends per second; inf for no global limit)")
        self.per_key_interval = per_key_interval
        self.global_rate = global_rate
        self.clock = clock
        self.sleep = sleep
        self._global_interval = 1.0 / global_rate
        self._keys: dict[Hashable, _Key] = {}
        self._global_next = _NEVER
        self._global_blocked = _NEVER
        self._prune_limit = _PRUNE_AT

    def __repr__(self) -> str:
        return f"Pacer(per_key_interval={self.per_key_interval!r}, global_rate={self.global_rate!r})"

    @property
    def remembered(self) -> int:
        """Keys held in memory: those with a pending send or backoff (and some expired, until a sweep)."""
        return len(self._keys)

    async def wait(self, key: Hashable) -> None:
        """Return when a send to ``key`` is allowed; the caller should send right away."""
        interval = self.per_key_interval
        state = self._state(key)
        target = max(self.clock(), state.reserved)
        state.reserved = target + interval  # the next waiter for this key queues behind us
        while True:
            state = self._state(key)
            now = self.clock()
            ready = max(target, state.last + interval, state.blocked, self._global_blocked)
            if ready > now + _EPS:  # this key's turn has not come (or a backoff holds it)
                target = ready
                state.reserved = max(state.reserved, ready + interval)
                await self.sleep(ready - now)
                continue
            start = max(now, self._global_next, self._global_blocked)  # then a slot in the global rate
            self._global_next = start + self._global_interval
            if start > now + _EPS:
                await self.sleep(start - now)
                state = self._state(key)
                now = self.clock()
                if max(state.last + interval, state.blocked, self._global_blocked) > now + _EPS:
                    continue  # a backoff, or an earlier send to this key, arrived meanwhile
            state.last = now
            state.reserved = max(state.reserved, now + interval)
            self._maybe_prune(now)
            return

    def backoff(self, key: Hashable, seconds: float) -> None:
        """Hold sends to ``key`` for ``seconds`` from now (a receiver's ``retry_after``)."""
        state = self._state(key)
        state.blocked = max(state.blocked, self.clock() + max(0.0, seconds))

    def backoff_all(self, seconds: float) -> None:
        """Hold every send for ``seconds`` from now."""
        self._global_blocked = max(self._global_blocked, self.clock() + max(0.0, seconds))

    def delay(self, key: Hashable) -> float:
        """Seconds a send to ``key`` arriving now would wait at least (other keys' global slots aside)."""
        state = self._keys.get(key, _Key())
        now = self.clock()
        return max(
            0.0, max(state.reserved, state.last + self.per_key_interval, state.blocked, self._global_blocked) - now
        )

    def _state(self, key: Hashable) -> _Key:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        return state

    def _maybe_prune(self, now: float) -> None:
        if len(self._keys) < self._prune_limit:
            return
        interval = self.per_key_interval
        self._keys = {key: s for key, s in self._keys.items() if max(s.reserved, s.last + interval, s.blocked) > now}
        self._prune_limit = max(_PRUNE_AT, 2 * len(self._keys))
