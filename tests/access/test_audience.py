"""Audience: one signal decided over many subscriptions, the same as deliver_at row by row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from signalmint.access import Audience, Decisions, Row, deliver_at
from signalmint.records import Plan, Signal, Subscriber, Subscription, to_datetime, to_datetime64

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
MIN15 = timedelta(minutes=15)
NAT = np.array(["NaT"], dtype="datetime64[ns]")

FREE = Plan(id="free", version=1, name="Free", automations=("spikes",), delay=MIN15, watchlist=2)
PREMIUM = Plan(id="premium", version=1, name="Premium", automations=("spikes", "gaps"), price=2900)
FIXED = Plan(id="big5", version=1, name="Big 5", automations=("spikes",), price=900, keys=("AAPL", "MSFT"))
PICK = Plan(id="pick", version=1, name="Pick", automations=("spikes",), keys=("AAPL", "TSLA"), watchlist=1)


def person(i: int, confirmed: bool = True) -> Subscriber:
    return Subscriber(id=i, email=f"{i}@example.com", created_at=T0, confirmed_at=T0 if confirmed else None)


def row(
    i: int,
    plan: Plan,
    state: str = "active",
    watchlist: AbstractSet[str] = frozenset(),
    confirmed: bool = True,
    *,
    trial_end: datetime | None = None,
    period_end: datetime | None = None,
    past_due_since: datetime | None = None,
    ended_at: datetime | None = None,
) -> Row:
    subscription = Subscription(
        id=100 + i,
        subscriber_id=i,
        plan_id=plan.id,
        plan_version=plan.version,
        state=state,
        started_at=T0 - timedelta(days=40),
        trial_end=trial_end,
        period_end=period_end,
        past_due_since=past_due_since,
        ended_at=ended_at,
    )
    return (subscription, plan, person(i, confirmed), frozenset(watchlist))


def spike(key: str = "AAPL", automation: str = "spikes", time: datetime = T0) -> Signal:
    return Signal(automation=automation, key=key, time=time, kind="spike", score=7.5, payload={})


def expected(rows: Sequence[Row], signal: Signal, now: datetime) -> list[tuple[int, datetime]]:
    out = []
    for subscription, plan, subscriber, watchlist in rows:
        at = deliver_at(signal, subscription, plan, subscriber, watchlist=watchlist, now=now)
        if at is not None:
            out.append((subscription.id, at))
    return out


def got(decisions: Decisions) -> list[tuple[int, datetime]]:
    at = [to_datetime(int(t)) for t in decisions.deliver_at.view(np.int64)]
    return list(zip(decisions.subscription_id.tolist(), at, strict=True))


def as_columns(rows: Sequence[Row]) -> Audience:
    """The same rows through the columnar constructor, as the store would give them."""
    plans = list(dict.fromkeys(plan for _, plan, _, _ in rows))

    def dates(name: str) -> np.ndarray:
        values = [getattr(s, name) for s, _, _, _ in rows]
        return np.array(
            [np.datetime64("NaT", "ns") if v is None else to_datetime64(v) for v in values],
            dtype="datetime64[ns]",
        )

    return Audience.from_columns(
        plans,
        plan_index=[plans.index(p) for _, p, _, _ in rows],
        subscription_id=[s.id for s, _, _, _ in rows],
        subscriber_id=[s.subscriber_id for s, _, _, _ in rows],
        state=[s.state for s, _, _, _ in rows],
        confirmed=[
            who.confirmed and s.subscriber_id == who.id and (s.plan_id, s.plan_version) == (p.id, p.version)
            for s, p, who, _ in rows
        ],
        trial_end=dates("trial_end"),
        period_end=dates("period_end"),
        past_due_since=dates("past_due_since"),
        watchlists=[w for _, _, _, w in rows],
    )


ROWS: list[Row] = [
    row(1, FREE, watchlist={"TSLA", "AAPL", "MSFT"}),  # capped to AAPL, MSFT
    row(2, FREE, watchlist={"TSLA"}),
    row(3, PREMIUM),
    row(4, PREMIUM, "expired"),
    row(5, PREMIUM, confirmed=False),
    row(6, PREMIUM, "trialing", trial_end=T0 + MIN15),
    row(7, PREMIUM, "canceled", period_end=T0),
    row(8, PREMIUM, "past_due", past_due_since=T0 - timedelta(days=2)),
    row(9, PREMIUM, "past_due", past_due_since=T0 - timedelta(days=3)),  # grace ends at T0
    row(10, PREMIUM, "comped"),
    row(11, PREMIUM, "comped", period_end=T0 - MIN15),
    row(12, FIXED),
    row(13, PICK, watchlist={"AAPL", "TSLA"}),  # cap 1: AAPL
    row(14, PICK, watchlist={"TSLA", "MSFT"}),  # MSFT not in keys: TSLA
    row(15, PREMIUM, "paused"),
]


@pytest.mark.parametrize("build", [Audience.build, as_columns], ids=["rows", "columns"])
@pytest.mark.parametrize("key", ["AAPL", "MSFT", "TSLA", "IBM"])
@pytest.mark.parametrize("automation", ["spikes", "gaps", "nothing"])
@pytest.mark.parametrize("now", [T0 - timedelta(seconds=1), T0, T0 + MIN15, T0 + timedelta(days=30)])
def test_decide_equals_deliver_at_row_by_row(
    build: Callable[[Sequence[Row]], Audience], key: str, automation: str, now: datetime
) -> None:
    audience = build(ROWS)
    signal = spike(key, automation)
    assert got(audience.decide(signal, now)) == expected(ROWS, signal, now)


def test_who_gets_aapl_at_t0() -> None:
    d = Audience.build(ROWS).decide(spike("AAPL"), T0)
    assert d.subscription_id.tolist() == [101, 103, 106, 108, 110, 112, 113]
    assert d.subscriber_id.tolist() == [1, 3, 6, 8, 10, 12, 13]
    assert d.row.tolist() == [0, 2, 5, 7, 9, 11, 12]
    assert d.deliver_at[0] == to_datetime64(T0 + MIN15)
    assert d.deliver_at.dtype == np.dtype("datetime64[ns]")
    assert len(d) == 7


def test_signal_time_in_another_timezone_is_the_same_instant() -> None:
    from zoneinfo import ZoneInfo

    paris = spike("AAPL", time=T0.astimezone(ZoneInfo("Europe/Paris")))
    d = Audience.build(ROWS).decide(paris, T0)
    assert got(d) == expected(ROWS, paris, T0)


def test_empty_audience_and_unknown_automation() -> None:
    empty = Audience.build([])
    assert len(empty) == 0 and len(empty.decide(spike(), T0)) == 0
    assert len(Audience.build(ROWS).decide(spike(automation="nope"), T0)) == 0
    assert repr(Audience.build(ROWS)) == "<Audience 15 subscriptions, 4 plans>"


def test_mismatched_plan_row_never_receives() -> None:
    subscription, _, who, watchlist = row(1, PREMIUM)
    wrong = (subscription, Plan(id="premium", version=2, name="P2", automations=("spikes",)), who, watchlist)
    assert len(Audience.build([wrong]).decide(spike(), T0)) == 0


def test_dates_beyond_datetime64_saturate() -> None:
    far = datetime(2500, 1, 1, tzinfo=UTC)
    ancient = datetime(1500, 1, 1, tzinfo=UTC)
    rows = [
        row(1, PREMIUM, "comped", period_end=far),
        row(2, PREMIUM, "comped", period_end=ancient),
        row(3, PREMIUM, "trialing", trial_end=far),
        row(4, PREMIUM, "canceled", period_end=ancient),
    ]
    assert got(Audience.build(rows).decide(spike(), T0)) == expected(rows, spike(), T0) != []


def test_naive_or_out_of_range_times_are_refused() -> None:
    audience = Audience.build(ROWS)
    with pytest.raises(ValueError, match="naive"):
        audience.decide(spike(), datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="datetime64"):
        audience.decide(spike(time=datetime(2300, 1, 1, tzinfo=UTC)), T0)


def test_columns_must_line_up() -> None:
    with pytest.raises(ValueError, match="plan_index"):
        Audience.from_columns(
            [PREMIUM], plan_index=[1], subscription_id=[1], subscriber_id=[1], state=["active"],
            confirmed=[True], trial_end=NAT, period_end=NAT, past_due_since=NAT, watchlists=[set()],
        )  # fmt: skip
    with pytest.raises(ValueError, match="one value per subscription"):
        Audience.from_columns(
            [PREMIUM], plan_index=[0], subscription_id=[1], subscriber_id=[1], state=["active"],
            confirmed=[True, False], trial_end=NAT, period_end=NAT, past_due_since=NAT, watchlists=[set()],
        )  # fmt: skip
