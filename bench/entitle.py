"""Benchmark: who receives one signal, over 100,000 subscriptions, same run.

A population like the flagship product's: 60% free (15 minutes late, a watchlist of 5 of 500
symbols), 30% premium (every symbol, at once), 10% pro (API, monthly quota), plus a few on a
fixed-symbols plan and on another automation; states mixed (active, trialing, past_due,
canceled, comped, expired) with their dates spread around ``now``, 5% unconfirmed. Measured:

1. ``Audience.build`` once (compiling the columns and the watchlist index), several runs;
2. ``Audience.decide`` for each of 100 signals on random symbols, median per signal;
3. the Python loop calling ``deliver_at`` per subscription, on a few of the same signals.

Both must give the same subscriptions and times. The speed-up is the median over the loop's
signals of (loop time / ``Audience.decide`` time on the same signal, timed just before), with
its range. Run with ``uv run python bench/entitle.py``.

Last line: RESULT entitle_ms=... loop_ms=... speedup=... speedup_min=... speedup_max=... n=... load1=...
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from _common import add_common, describe_ratio, print_result, ratio_fields, ratios

from signalmint.access import Audience, Decisions, Row, deliver_at
from signalmint.records import Plan, Signal, Subscriber, Subscription, to_datetime64

N = 100_000
SYMBOLS = [f"SYM{i:03d}" for i in range(500)]
SIGNALS = 100
LOOP_SIGNALS = 5
BUILD_RUNS = 3
SEED = 20240102
NOW = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)

FREE = Plan(
    id="free",
    version=1,
    name="Free",
    automations=("volume-spikes",),
    delay=timedelta(minutes=15),
    watchlist=5,
    masked_fields=frozenset({"volume", "ratio"}),
    channels=frozenset({"web", "email"}),
)
PREMIUM = Plan(
    id="premium",
    version=1,
    name="Premium",
    automations=("volume-spikes", "gaps"),
    price=2900,
    channels=frozenset({"web", "email", "telegram", "webhook"}),
)
PRO = Plan(
    id="pro",
    version=1,
    name="Pro",
    automations=("volume-spikes", "gaps"),
    price=9900,
    channels=frozenset({"web", "email", "api"}),
    api_quota=100_000,
    overage_price=1,
)
BIG = Plan(id="big", version=1, name="Big 50", automations=("volume-spikes",), price=900, keys=tuple(SYMBOLS[:50]))
GAPS = Plan(id="gaps", version=1, name="Gaps", automations=("gaps",), price=1900)


def population(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for i in range(N):
        plan = rng.choices([FREE, PREMIUM, PRO, BIG, GAPS], weights=[60, 27, 10, 2, 1])[0]
        state = rng.choices(
            ["active", "trialing", "past_due", "canceled", "comped", "expired"], weights=[70, 10, 5, 5, 3, 7]
        )[0]

        def around() -> datetime:
            return NOW + timedelta(seconds=rng.randint(-10 * 86_400, 10 * 86_400))

        subscriber = Subscriber(
            id=i, email=f"s{i}@example.com", created_at=NOW, confirmed_at=NOW if rng.random() < 0.95 else None
        )
        subscription = Subscription(
            id=1_000_000 + i,
            subscriber_id=i,
            plan_id=plan.id,
            plan_version=plan.version,
            state=state,
            started_at=NOW - timedelta(days=60),
            trial_end=around() if state == "trialing" else None,
            period_end=around() if state in ("canceled", "expired") or rng.random() < 0.5 else None,
            past_due_since=around() - timedelta(days=5) if state == "past_due" else None,
        )
        rows.append((subscription, plan, subscriber, frozenset(rng.sample(SYMBOLS, 5))))
    return rows


def loop(rows: list[Row], signal: Signal) -> list[tuple[int, datetime]]:
    out = []
    for subscription, plan, subscriber, watchlist in rows:
        at = deliver_at(signal, subscription, plan, subscriber, watchlist=watchlist, now=NOW)
        if at is not None:
            out.append((subscription.id, at))
    return out


def same(decisions: Decisions, expected: list[tuple[int, datetime]]) -> bool:
    return decisions.subscription_id.tolist() == [s for s, _ in expected] and all(
        d == to_datetime64(at) for d, (_, at) in zip(decisions.deliver_at, expected, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=SIGNALS, help=f"signals timed with Audience.decide ({SIGNALS})")
    parser.add_argument(
        "--loop-signals", type=int, default=LOOP_SIGNALS, help=f"signals timed with the Python loop ({LOOP_SIGNALS})"
    )
    add_common(parser, runs=BUILD_RUNS, ports=False, runs_help="timed Audience.build runs")
    args = parser.parse_args()
    rng = random.Random(SEED)
    rows = population(rng)
    signals = [
        Signal(
            automation="volume-spikes",
            key=rng.choice(SYMBOLS),
            time=NOW - timedelta(seconds=rng.randint(0, 600)),
            kind="spike",
            score=8.0,
            payload={"volume": 1e6, "ratio": 8.0},
        )
        for _ in range(args.signals)
    ]
    clock = time.perf_counter

    build_s = []
    for _ in range(args.runs):
        began = clock()
        audience = Audience.build(rows)
        build_s.append(clock() - began)

    audience.decide(signals[0], NOW)  # warm up
    decide_s, receivers = [], []
    for signal in signals:
        began = clock()
        decisions = audience.decide(signal, NOW)
        decide_s.append(clock() - began)
        receivers.append(len(decisions))

    loop_s, paired_s = [], []
    for signal in signals[: args.loop_signals]:
        began = clock()
        audience.decide(signal, NOW)
        paired_s.append(clock() - began)
        began = clock()
        expected = loop(rows, signal)
        loop_s.append(clock() - began)
        if not same(audience.decide(signal, NOW), expected):
            raise SystemExit(f"MISMATCH on {signal.key}: Audience.decide differs from deliver_at")

    build_ms = statistics.median(build_s) * 1e3
    entitle_ms = statistics.median(decide_s) * 1e3
    loop_ms = statistics.median(loop_s) * 1e3
    print(f"population: {N:,} subscriptions, {len(audience.plans)} plans, {len(SYMBOLS)} symbols")
    print(f"receivers per signal: median {statistics.median(receivers):,.0f} (min {min(receivers):,})")
    stats = ratios(loop_s, paired_s)
    print(f"Audience.build:  {build_ms:9.1f} ms  (median of {args.runs}, once per population change)")
    print(
        f"Audience.decide: {entitle_ms:9.3f} ms  per signal (median of {len(decide_s)}; "
        f"p90 {statistics.quantiles(decide_s, n=10)[-1] * 1e3:.3f} ms)"
    )
    print(f"deliver_at loop: {loop_ms:9.1f} ms  per signal (median of {len(loop_s)}), same answers")
    print(f"speedup: {describe_ratio(stats, 0)} (per signal: loop / decide on the same signal)")
    print(f"BUILD build_ms={build_ms:.0f} n={N}")
    print_result(
        {
            "entitle_ms": f"{entitle_ms:.3f}",
            "loop_ms": f"{loop_ms:.1f}",
            **ratio_fields("speedup", stats, 0),
            "build_ms": f"{build_ms:.0f}",
            "n": N,
        }
    )


if __name__ == "__main__":
    main()
