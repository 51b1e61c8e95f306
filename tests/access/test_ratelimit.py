"""TokenBucketLimiter: refill arithmetic on a fake clock, headers, eviction, threads."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalmint.access.ratelimit import RateDecision, TokenBucketLimiter


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond, so that a missing lock shows up as a race."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def count_allowed(limiter: TokenBucketLimiter, key: str | int, n: int, rate: float, burst: int) -> int:
    return sum(limiter.check(key, rate=rate, burst=burst).allowed for _ in range(n))


@pytest.mark.parametrize(("rate", "burst"), [(1.0, 5), (10.0, 20), (0.5, 1), (100.0, 3)])
def test_accepts_burst_plus_rate_times_elapsed(clock: FakeClock, rate: float, burst: int) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    seconds, step = 30.0, 0.01
    accepted = 0
    for _ in range(int(seconds / step)):
        clock.advance(step)
        accepted += count_allowed(limiter, "k", 5, rate, burst)
    expected = burst + rate * seconds
    assert abs(accepted - expected) <= 0.1 * expected
    # Spent: more requests at this instant are refused.
    assert not limiter.check("k", rate=rate, burst=burst).allowed


def test_real_clock_short_run() -> None:
    limiter = TokenBucketLimiter()
    rate, burst = 50.0, 10
    start = time.monotonic()
    accepted = 0
    while time.monotonic() - start < 0.3:
        accepted += limiter.check("k", rate=rate, burst=burst).allowed
        time.sleep(0.001)
    elapsed = time.monotonic() - start
    assert burst + rate * 0.3 * 0.9 <= accepted <= burst + rate * elapsed + 1


def test_refused_requests_do_not_consume(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    assert count_allowed(limiter, "k", 3, rate=1.0, burst=3) == 3
    assert count_allowed(limiter, "k", 1000, rate=1.0, burst=3) == 0
    clock.advance(1.0)
    # Had the refused ones been charged, the bucket would be deep in debt.
    assert limiter.check("k", rate=1.0, burst=3).allowed
    assert not limiter.check("k", rate=1.0, burst=3).allowed


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    assert count_allowed(limiter, "a", 10, rate=1.0, burst=4) == 4
    assert count_allowed(limiter, "b", 10, rate=1.0, burst=4) == 4
    assert count_allowed(limiter, 7, 10, rate=1.0, burst=4) == 4
    assert count_allowed(limiter, "7", 10, rate=1.0, burst=4) == 4


def test_refill_is_capped_at_burst(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    limiter.check("k", rate=10.0, burst=5)
    clock.advance(3600.0)
    decision = limiter.check("k", rate=10.0, burst=5)
    assert decision.remaining == 4
    assert count_allowed(limiter, "k", 100, rate=10.0, burst=5) == 4


def test_a_new_bucket_is_full_and_reports_itself(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    first = limiter.check("k", rate=2.0, burst=10)
    assert first == RateDecision(allowed=True, limit=10, remaining=9, reset=0.5, retry_after=None, rate=2.0)


def test_headers_when_allowed(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    for _ in range(3):
        decision = limiter.check("k", rate=0.5, burst=10)
    assert decision.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "6",  # 3 tokens at 0.5/s
        "RateLimit-Policy": "10;w=20",
    }


def test_headers_when_refused(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    count_allowed(limiter, "k", 2, rate=3.0, burst=2)
    clock.advance(0.1)
    refused = limiter.check("k", rate=3.0, burst=2)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1 / 3 - 0.1)
    assert refused.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",  # (2 - 0.3) / 3 = 0.57 s, rounded up
        "RateLimit-Policy": "2;w=1",
        "Retry-After": "1",  # never 0: clients read 0 as "now"
    }


def test_retry_after_seconds_are_rounded_up(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    limiter.check("k", rate=0.1, burst=1)
    refused = limiter.check("k", rate=0.1, burst=1)
    assert refused.retry_after == pytest.approx(10.0)
    clock.advance(0.5)
    assert limiter.check("k", rate=0.1, burst=1).headers()["Retry-After"] == "10"


@pytest.mark.parametrize("cost", [1, 2.5, 7])
@pytest.mark.parametrize("rate", [0.3, 1.0, 7.0, 1000.0])
def test_waiting_retry_after_is_enough(clock: FakeClock, rate: float, cost: float) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    for _ in range(20):
        decision = limiter.check("k", rate=rate, burst=10, cost=cost)
        if decision.allowed:
            continue
        assert decision.retry_after is not None and decision.retry_after > 0
        clock.advance(decision.retry_after)
        assert limiter.check("k", rate=rate, burst=10, cost=cost).allowed
        # ... and not much less would have been.
        assert not limiter.check("k", rate=rate, burst=10, cost=cost).allowed


def test_costs_are_charged(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    assert limiter.check("k", rate=1.0, burst=10, cost=6).remaining == 4
    refused = limiter.check("k", rate=1.0, burst=10, cost=6)
    assert not refused.allowed and refused.remaining == 4 and refused.retry_after == 2.0
    assert limiter.check("k", rate=1.0, burst=10, cost=0).allowed  # a free peek


def test_clock_going_backwards_gives_no_extra_tokens(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    count_allowed(limiter, "k", 5, rate=1.0, burst=5)
    clock.advance(-10.0)
    assert not limiter.check("k", rate=1.0, burst=5).allowed
    clock.advance(10.5)
    assert not limiter.check("k", rate=1.0, burst=5).allowed
    clock.advance(0.5)
    assert limiter.check("k", rate=1.0, burst=5).allowed


def test_lowering_burst_caps_the_bucket(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock)
    limiter.check("k", rate=1.0, burst=100)
    assert count_allowed(limiter, "k", 50, rate=1.0, burst=3) == 3


def test_least_recently_used_keys_are_evicted(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        count_allowed(limiter, key, 2, rate=0.001, burst=2)
    limiter.check("a", rate=0.001, burst=2)  # touch "a": "b" is now the oldest
    limiter.check("d", rate=0.001, burst=2)
    assert len(limiter) == 3
    assert limiter.check("b", rate=0.001, burst=2).allowed  # forgotten, so full again
    assert not limiter.check("a", rate=0.001, burst=2).allowed  # "a" was kept
    for i in range(1000):
        limiter.check(i, rate=1.0, burst=1)
    assert len(limiter) == 3


@pytest.mark.parametrize(
    ("rate", "burst", "cost"),
    [
        (0.0, 1, 1),
        (-1.0, 1, 1),
        (float("nan"), 1, 1),
        (float("inf"), 1, 1),
        (1.0, 0, 0),
        (1.0, 5, 6),
        (1.0, 5, -1),
        (1.0, 5, float("nan")),
    ],
)
def test_bad_arguments_are_refused(rate: float, burst: int, cost: float) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter().check("k", rate=rate, burst=burst, cost=cost)


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        TokenBucketLimiter(max_keys=0)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_never_exceed_the_allowance() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(clock=clock)
    burst, rate, rounds = 100, 50.0, 20
    allowed = [0] * 8
    barrier = threading.Barrier(8)

    def hammer(i: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            for _ in range(200):
                allowed[i] += limiter.check("shared", rate=rate, burst=burst).allowed
            if i == 0:
                clock.advance(0.01)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = clock.now - 1000.0
    assert sum(allowed) <= burst + rate * elapsed + 1e-6
    assert sum(allowed) >= burst  # the bucket did serve its burst


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_on_the_real_clock() -> None:
    limiter = TokenBucketLimiter()
    burst, rate = 20, 100.0
    allowed = [0] * 8
    start = time.monotonic()

    def hammer(i: int) -> None:
        while time.monotonic() - start < 0.2:
            allowed[i] += limiter.check("shared", rate=rate, burst=burst).allowed

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    assert burst <= sum(allowed) <= burst + rate * elapsed + 1


@given(
    rate=st.floats(0.01, 1000.0),
    burst=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 1.0)), min_size=1, max_size=200),
)
def test_accepted_total_is_bounded(rate: float, burst: int, steps: list[tuple[float, float]]) -> None:
    clock = FakeClock(0.0)
    limiter = TokenBucketLimiter(clock=clock)
    accepted = 0.0
    for pause, fraction in steps:
        clock.advance(pause)
        cost = fraction * burst
        decision = limiter.check("k", rate=rate, burst=burst, cost=cost)
        if decision.allowed:
            accepted += cost
        assert 0 <= decision.remaining <= burst
        assert decision.allowed == (decision.retry_after is None)
        assert accepted <= burst + rate * clock.now + 1e-6 * len(steps)
