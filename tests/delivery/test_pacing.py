"""The pacer in virtual time (an injected clock and sleep), plus one short run on the real clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from signalmint.delivery.pacing import Pacer


class VirtualTime:
    """A clock that jumps to the next sleeper's wake-up once every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._seq, future))
        self._seq += 1
        await future

    def pacer(self, per_key_interval: float = 1.0, global_rate: float = 30.0) -> Pacer:
        return Pacer(per_key_interval, global_rate, clock=self.clock, sleep=self.sleep)

    def run(self, *steps: Coroutine[Any, Any, Any]) -> list[Any]:
        async def drive() -> list[Any]:
            tasks = [asyncio.ensure_future(step) for step in steps]
            while not all(task.done() for task in tasks):
                for _ in range(50):  # let every task run until it waits
                    await asyncio.sleep(0)
                if self._sleepers:
                    when, _, future = heapq.heappop(self._sleepers)
                    self.now = max(self.now, when)
                    future.set_result(None)
            return [task.result() for task in tasks]

        return asyncio.run(drive())

    def at(self, delay: float, action: Callable[[], Any]) -> Coroutine[Any, Any, None]:
        async def later() -> None:
            await self.sleep(delay)
            action()

        return later()


Log = list[tuple[str, float]]


def sends(vt: VirtualTime, pacer: Pacer, log: Log, key: str) -> Coroutine[Any, Any, None]:
    async def one() -> None:
        await pacer.wait(key)
        log.append((key, vt.now))

    return one()


def times_of(log: list[tuple[str, float]], key: str) -> list[float]:
    return [round(t, 6) for k, t in log if k == key]


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if start <= t < start + window - 1e-9) for start in times), default=0)


def test_one_key_is_spaced_by_the_interval() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 30.0)
    vt.run(*(sends(vt, pacer, log, "chat") for _ in range(5)))
    assert times_of(log, "chat") == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_other_keys_only_wait_for_the_global_rate() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 10.0)
    vt.run(*(sends(vt, pacer, log, key) for key in ("a", "a", "b", "c")))
    assert times_of(log, "a") == [0.0, 1.0]
    assert times_of(log, "b") == [0.1] and times_of(log, "c") == [0.2]


def test_global_rate_over_many_keys() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 30.0)
    vt.run(*(sends(vt, pacer, log, f"chat{i}") for i in range(100)))
    times = [t for _, t in log]
    assert len(times) == 100 and max_in_window(times, 1.0) == 30
    assert math.isclose(max(times), 99 / 30)


def test_backoff_holds_one_key() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 30.0)

    async def scenario() -> None:
        await sends(vt, pacer, log, "a")
        pacer.backoff("a", 5.0)
        assert math.isclose(pacer.delay("a"), 5.0) and pacer.delay("b") == 0.0
        await asyncio.gather(sends(vt, pacer, log, "a"), sends(vt, pacer, log, "b"))

    vt.run(scenario())
    assert times_of(log, "a") == [0.0, 5.0] and times_of(log, "b") == [round(1 / 30, 6)]  # the next global slot


def test_backoff_reaches_waiters_already_queued() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 30.0)
    vt.run(*(sends(vt, pacer, log, "a") for _ in range(3)), vt.at(0.5, lambda: pacer.backoff("a", 3.0)))
    assert times_of(log, "a") == [0.0, 3.5, 4.5]


def test_backoff_all_holds_every_key_including_the_global_queue() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 2.0)  # a slow global rate: waiters sit in the global queue
    vt.run(*(sends(vt, pacer, log, k) for k in "abcd"), vt.at(0.2, lambda: pacer.backoff_all(10.0)))
    assert [round(t, 6) for _, t in log] == [0.0, 10.2, 10.7, 11.2]  # held from 0.2 s to 10.2 s


def test_a_global_delay_never_squeezes_two_sends_to_one_key() -> None:
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 1.5)
    vt.run(*(sends(vt, pacer, log, k) for k in ["b", "c", "d", "a", "e", "a", "a"]))
    a = times_of(log, "a")
    assert len(a) == 3 and all(later - earlier >= 1.0 - 1e-6 for earlier, later in itertools.pairwise(a))
    everything = sorted(t for _, t in log)
    assert all(later - earlier >= 1 / 1.5 - 1e-6 for earlier, later in itertools.pairwise(everything))


@pytest.mark.parametrize("seed", range(5))
def test_random_traffic_keeps_both_limits(seed: int) -> None:
    rng = random.Random(seed)
    vt, log = VirtualTime(), Log()
    pacer = vt.pacer(1.0, 8.0)
    keys = [f"k{rng.randrange(6)}" for _ in range(80)]

    async def arrive(key: str, delay: float) -> None:
        await vt.sleep(delay)
        await sends(vt, pacer, log, key)

    def hold(key: str) -> Callable[[], None]:
        return lambda: pacer.backoff(key, 2.0)

    backoffs = [vt.at(rng.uniform(0, 8), hold(f"k{rng.randrange(6)}")) for _ in range(4)]
    vt.run(*(arrive(k, rng.uniform(0, 5)) for k in keys), *backoffs, vt.at(3.0, lambda: pacer.backoff_all(1.0)))
    assert len(log) == 80
    for key in set(keys):
        t = times_of(log, key)
        assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(t)), (key, t)
    assert max_in_window([t for _, t in log], 1.0) <= 8
    assert not [t for _, t in log if 3.0 < t < 4.0 - 1e-6]  # the global backoff from 3 s to 4 s


def test_memory_stays_bounded_over_many_keys() -> None:
    vt = VirtualTime()
    pacer = vt.pacer(1.0, math.inf)

    async def many() -> int:
        peak = 0
        for i in range(20_000):
            await pacer.wait(f"chat{i}")
            if i % 10 == 0:
                vt.now += 1.0  # time passes: older keys' turns lie in the past
            peak = max(peak, pacer.remembered)
        return peak

    (peak,) = vt.run(many())
    assert peak <= 2048


def test_invalid_settings_are_refused() -> None:
    for interval, rate in ((-1.0, 30.0), (math.inf, 30.0), (1.0, 0.0), (1.0, -5.0)):
        with pytest.raises(ValueError):
            Pacer(interval, rate)


def test_real_clock() -> None:
    pacer = Pacer(per_key_interval=0.05, global_rate=1000.0)

    async def three() -> list[float]:
        out = []
        for _ in range(3):
            await pacer.wait("chat")
            out.append(time.monotonic())
        return out

    times = asyncio.run(three())
    assert all(b - a >= 0.049 for a, b in itertools.pairwise(times))


def test_sleep_and_clock_are_used_as_given() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sleep_fn: Callable[[float], Awaitable[None]] = sleep
    pacer = Pacer(1.0, 30.0, clock=lambda: 100.0, sleep=sleep_fn)
    asyncio.run(pacer.wait("a"))
    assert slept == [] and repr(pacer) == "Pacer(per_key_interval=1.0, global_rate=30.0)"
