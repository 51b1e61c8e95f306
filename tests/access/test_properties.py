"""Properties that must hold for every population, signal and time: no leak, ever.

Times are drawn from a few hours around one instant, in whole minutes or microseconds off
them, so that ``now`` often lands exactly on a trial end, period end or grace end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from signalmint.access import (
    MASK_ALL,
    Audience,
    Row,
    deliver_at,
    grants,
    is_entitled,
    key_allowed,
    mask,
    masked_json,
    public_grant,
    quiet_until,
)
from signalmint.records import STATES, Plan, Preferences, Signal, Subscriber, Subscription, to_datetime

from .test_audience import as_columns

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
KEYS = ("AAPL", "MSFT", "TSLA", "NVDA", "IBM")
AUTOMATIONS = ("spikes", "gaps")
FIELDS = ("volume", "ratio", "z", "close", "score")
US = timedelta(microseconds=1)
ZONES = (UTC, timezone(timedelta(hours=2)), ZoneInfo("America/New_York"))

MINUTES = (-24 * 60, -90, -60, -16, -15, -14, -1, 0, 1, 14, 15, 16, 60, 90, 24 * 60)
times = st.builds(
    lambda minutes, us, zone: (T0 + timedelta(minutes=minutes, microseconds=us)).astimezone(zone),
    st.sampled_from(MINUTES) | st.integers(-48 * 60, 48 * 60),
    st.sampled_from([0, 0, 0, -1, 1]),
    st.sampled_from(ZONES),
)
maybe_times = st.none() | times
key_sets = st.frozensets(st.sampled_from(KEYS))
masks = st.frozensets(st.sampled_from((*FIELDS, MASK_ALL, "absent")))

plans = st.builds(
    Plan,
    id=st.sampled_from(["free", "premium", "pro"]),
    version=st.integers(1, 2),
    name=st.just("Plan"),
    automations=st.sampled_from([AUTOMATIONS, AUTOMATIONS, ("spikes",), ("gaps",), ()]),
    price=st.sampled_from([0, 2900]),
    grace_days=st.integers(0, 2),
    delay=st.sampled_from([-5, 0, 1, 15, 60]).map(lambda m: timedelta(minutes=m)),
    keys=st.none() | st.lists(st.sampled_from(KEYS), unique=True).map(tuple),
    watchlist=st.none() | st.integers(-1, 4),
    channels=st.frozensets(st.sampled_from(["web", "api", "email"])),
    masked_fields=masks,
)
signals = st.builds(
    Signal,
    automation=st.sampled_from(AUTOMATIONS),
    key=st.sampled_from(KEYS),
    time=times,
    kind=st.just("spike"),
    score=st.floats(-1e6, 1e6),
    payload=st.dictionaries(st.sampled_from(FIELDS), st.floats(allow_nan=False)),
    hash=st.just("ab" * 32),
    prev_hash=st.just("cd" * 32),
)


# Strategies built once (a strategy built inside a draw is validated again on every draw, which
# cost most of these tests' time); each draws exactly what the inline one it replaces drew.
CONFIRMED = st.sampled_from([T0] * 7 + [None])
SUBSCRIPTION_IDS = st.integers(1, 10**6)
ONE_IN_TEN = st.sampled_from([0] * 9 + [1])  # mostly the matching id or version, sometimes the next
ROW_STATES = st.sampled_from((*STATES, *STATES, "active", "active", "paused"))
PAST_DUE = st.builds(lambda t, d: t - timedelta(days=d), times, st.integers(0, 2)) | st.none()
SUBSCRIBER_IDS = st.sampled_from([1, 2, 3])


@st.composite
def rows(draw: st.DrawFn, pool: st.SearchStrategy[Plan], subscriber_ids: st.SearchStrategy[int]) -> Row:
    plan = draw(pool)
    who = draw(subscriber_ids)
    subscriber = Subscriber(
        id=who,
        email=f"{who}@example.com",
        created_at=T0,
        confirmed_at=draw(CONFIRMED),
    )
    subscription = Subscription(
        id=draw(SUBSCRIPTION_IDS),
        subscriber_id=who + draw(ONE_IN_TEN),
        plan_id=plan.id,
        plan_version=plan.version + draw(ONE_IN_TEN),
        state=draw(ROW_STATES),
        started_at=T0 - timedelta(days=30),
        trial_end=draw(maybe_times),
        period_end=draw(maybe_times),
        past_due_since=draw(PAST_DUE),
    )
    return (subscription, plan, subscriber, draw(key_sets))


@st.composite
def populations(draw: st.DrawFn, max_size: int = 30) -> list[Row]:
    pool = draw(st.lists(plans, min_size=1, max_size=4))
    return draw(st.lists(rows(st.sampled_from(pool), SUBSCRIBER_IDS), max_size=max_size))


def boundaries(population: Sequence[Row]) -> list[datetime]:
    """The instants at which some row's entitlement ends."""
    out = []
    for subscription, plan, _, _ in population:
        out += [d for d in (subscription.trial_end, subscription.period_end) if d is not None]
        if subscription.past_due_since is not None:
            out.append(subscription.past_due_since + timedelta(days=plan.grace_days))
    return out


NUDGE = st.sampled_from([0, 0, -1, 1])


@st.composite
def scenarios(draw: st.DrawFn, max_size: int = 30) -> tuple[list[Row], Signal, datetime]:
    """A population, a signal, and a ``now`` that is often exactly on (or 1 µs off) a boundary."""
    population = draw(populations(max_size))
    edges = boundaries(population)
    now = draw(times) if not edges or draw(st.booleans()) else draw(st.sampled_from(edges))
    now += timedelta(microseconds=draw(NUDGE))
    return population, draw(signals), now


def decide_one(row: Row, signal: Signal, now: datetime) -> datetime | None:
    subscription, plan, subscriber, watchlist = row
    return deliver_at(signal, subscription, plan, subscriber, watchlist=watchlist, now=now)


# (1) never before signal.time + plan.delay; (2) never a key outside the plan's keys or the
# capped watchlist; (3) expired, unknown states, unconfirmed subscribers and mismatched rows never


@settings(max_examples=500)
@given(scenarios(8))
def test_no_row_ever_receives_what_its_plan_does_not_allow(scenario: tuple[list[Row], Signal, datetime]) -> None:
    population, signal, now = scenario
    for row in population:
        subscription, plan, subscriber, watchlist = row
        at = decide_one(row, signal, now)
        if at is None:
            continue
        assert at >= signal.time + plan.delay and at >= signal.time  # (1)
        assert signal.automation in plan.automations
        if plan.keys is not None:  # (2)
            assert signal.key in plan.keys
        if plan.watchlist is not None:
            eligible = sorted(k for k in watchlist if plan.keys is None or k in plan.keys)
            assert signal.key in eligible[: max(plan.watchlist, 0)]
        assert subscriber.confirmed and subscription.subscriber_id == subscriber.id  # (3)
        assert (subscription.plan_id, subscription.plan_version) == (plan.id, plan.version)
        assert subscription.state in {"trialing", "active", "canceled", "past_due", "comped"}
        if subscription.state == "trialing":
            assert subscription.trial_end is not None and now < subscription.trial_end
        if subscription.state == "canceled":
            assert subscription.period_end is not None and now < subscription.period_end
        if subscription.state == "past_due":
            since = subscription.past_due_since
            assert since is not None and now < since + timedelta(days=plan.grace_days)
        if subscription.state == "comped" and subscription.period_end is not None:
            assert now < subscription.period_end


@settings(max_examples=300)
@given(plans, key_sets, st.sampled_from(KEYS))
def test_key_allowed_is_the_capped_watchlist(plan: Plan, watchlist: frozenset[str], key: str) -> None:
    ok = key_allowed(key, plan, watchlist)
    if plan.keys is not None and key not in plan.keys:
        assert not ok
    elif plan.watchlist is None:
        assert ok
    else:
        rank = sum(1 for k in watchlist if k < key and (plan.keys is None or k in plan.keys))
        assert ok == (key in watchlist and rank < plan.watchlist)


# (4) masking never leaks a masked field


@settings(max_examples=300)
@given(signals, masks)
def test_masking_never_leaks(signal: Signal, masked: frozenset[str]) -> None:
    plan = Plan(id="p", version=1, name="P", automations=("spikes",), masked_fields=masked)
    hidden_score = "score" in masked or MASK_ALL in masked
    seen = mask(signal, plan)
    shown = set(seen.payload)
    assert not shown & masked
    assert shown <= set(signal.payload)
    if MASK_ALL in masked:
        assert not shown
    assert math.isnan(seen.score) if hidden_score else seen.score == signal.score
    if masked:
        assert seen.hash == "" and seen.prev_hash == ""
    doc = {"id": 1, "key": signal.key, "score": signal.score, "payload": dict(signal.payload), "hash": "h"}
    out = masked_json(doc, masked)
    assert not set(out["payload"]) & masked
    assert set(out["payload"]) <= set(signal.payload)
    if MASK_ALL in masked:
        assert out["payload"] == {}
    if hidden_score:
        assert out["score"] is None
    if masked:
        assert out["hash"] is None and out["prev_hash"] is None
    assert set(out["masked"]).isdisjoint(out["payload"])
    assert set(out["masked"]) | set(out["payload"]) | {"score"} == set(signal.payload) | {"score"}
    assert doc["payload"] == signal.payload  # the input is untouched


# (5) the public view is never earlier than any plan, nor less masked than any free plan


@given(st.lists(plans, max_size=5), signals, times)
def test_public_grant_never_beats_a_plan(pool: list[Plan], signal: Signal, at: datetime) -> None:
    g = public_grant(pool)
    for plan in pool:
        assert g.delay >= plan.delay
        if plan.free and MASK_ALL not in g.masked:
            assert plan.masked_fields <= g.masked
    if not any(p.free for p in pool) and pool:
        assert g.masked == {MASK_ALL}
    seen = g.view(signal, at)
    if seen is not None:
        for plan in pool:
            assert at >= signal.time + plan.delay
            if plan.free:
                assert not set(seen.payload) & plan.masked_fields


# (6) Audience.decide is deliver_at for every row, built from rows or from columns


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_audience_decides_as_deliver_at(scenario: tuple[list[Row], Signal, datetime]) -> None:
    population, signal, now = scenario
    want = [(row[0].id, at) for row in population if (at := decide_one(row, signal, now)) is not None]
    for audience in (Audience.build(population), as_columns(population)):
        d = audience.decide(signal, now)
        when = [to_datetime(int(t)) for t in d.deliver_at.view(np.int64)]
        assert list(zip(d.subscription_id.tolist(), when, strict=True)) == want
        assert d.subscriber_id.tolist() == [population[i][0].subscriber_id for i in d.row.tolist()]


# a subscriber's grant over several plans: released as soon as the first plan releases it, and
# a field shows exactly when some plan that has released the signal shows it

ANN = Subscriber(id=1, email="ann@example.com", created_at=T0, confirmed_at=T0)
LATER = T0 + timedelta(days=3)  # every plan has released by then


WIDE = plans.map(lambda p: replace(p, automations=AUTOMATIONS, keys=None, watchlist=None))
HELD_PLANS = st.lists(WIDE | plans, min_size=1, max_size=4)
ONE_PLAN = st.lists(WIDE | plans, min_size=1, max_size=1)  # a list's first plan, drawn as HELD_PLANS draws it
HELD_STATES = st.sampled_from(["active", "active", "trialing", "canceled", "past_due", "comped", "expired"])


@st.composite
def holdings(draw: st.DrawFn, pool: st.SearchStrategy[list[Plan]] = HELD_PLANS) -> list[tuple[Subscription, Plan]]:
    """Ann's subscriptions: ids always match, states mostly entitled."""
    held = []
    for i, plan in enumerate(draw(pool)):
        state = draw(HELD_STATES)
        subscription = Subscription(
            id=i,
            subscriber_id=1,
            plan_id=plan.id,
            plan_version=plan.version,
            state=state,
            started_at=T0 - timedelta(days=30),
            trial_end=draw(maybe_times),
            period_end=draw(maybe_times),
            past_due_since=draw(maybe_times),
        )
        held.append((subscription, plan))
    return held


def _hides(plan: Plan, field: str) -> bool:
    return field in plan.masked_fields or MASK_ALL in plan.masked_fields


@settings(max_examples=500)
@given(holdings(), key_sets, signals, times, st.sampled_from([None, "web", "email"]), st.just(LATER) | times)
def test_grant_is_the_best_single_plan_per_signal(
    held: list[tuple[Subscription, Plan]],
    watchlist: frozenset[str],
    signal: Signal,
    now: datetime,
    channel: str | None,
    at: datetime,
) -> None:
    g = grants(held, ANN, watchlist, now).get(signal.automation)
    releases = [
        (t, p)
        for s, p in held
        if (channel is None or channel in p.channels)
        and (t := deliver_at(signal, s, p, ANN, watchlist=watchlist, now=now)) is not None
    ]
    if not releases:
        assert g is None or g.release_at(signal, channel) is None
        return
    assert g is not None
    assert g.release_at(signal, channel) == min(t for t, _ in releases)
    seen = g.view(signal, at, channel)
    released = [p for t, p in releases if t <= at]
    if not released:
        assert seen is None
        return
    assert seen is not None
    assert set(seen.payload) == {f for f in signal.payload if not all(_hides(p, f) for p in released)}
    assert math.isnan(seen.score) == all(_hides(p, "score") for p in released)


# an entitlement is exactly a half-open window [.., end)


@settings(max_examples=500)
@given(holdings(ONE_PLAN), st.data())  # (the first holding only: drawing three more to drop them cost half the time)
def test_entitled_exactly_before_the_end(held: list[tuple[Subscription, Plan]], data: st.DataObject) -> None:
    subscription, plan = held[0]
    end: datetime | None = {
        "active": None,
        "trialing": subscription.trial_end,
        "canceled": subscription.period_end,
        "comped": subscription.period_end,
        "past_due": None
        if subscription.past_due_since is None
        else subscription.past_due_since + timedelta(days=plan.grace_days),
    }.get(subscription.state, T0)
    never = subscription.state == "expired" or (end is None and subscription.state not in ("active", "comped"))
    now = data.draw(times if end is None else st.sampled_from([end, end - US, end + US]) | times)
    entitled = is_entitled(subscription, plan, ANN, now)
    assert entitled == (not never and (end is None or now < end))
    signal = Signal(automation="a", key="k", time=T0, kind="x", score=0.0, payload={})
    opened = replace(plan, automations=("a",), keys=None, watchlist=None)
    row: Row = (subscription, opened, ANN, frozenset())
    assert len(Audience.build([row]).decide(signal, now)) == int(entitled)
    assert len(as_columns([row]).decide(signal, now)) == int(entitled)


# quiet hours: None outside the window; inside, the first instant the wall clock leaves it


def _quiet(local: datetime, start: int, end: int) -> bool:
    minute = local.hour * 60 + local.minute
    return start <= minute < end if start < end else (minute >= start or minute < end)


@given(
    st.datetimes(datetime(2024, 1, 1), datetime(2025, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 1439),
    st.integers(0, 1439),
    st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_quiet_until_is_the_end_of_the_window(at: datetime, start: int, end: int, tz: str) -> None:
    zone = ZoneInfo(tz)
    until = quiet_until(at, Preferences("email", quiet_start=start, quiet_end=end), tz)
    if start == end or not _quiet(at.astimezone(zone), start, end):
        assert until is None
        return
    assert until is not None and until > at and until.utcoffset() == timedelta(0)
    assert not _quiet(until.astimezone(zone), start, end)
    assert until - at <= timedelta(hours=25)
    step = at
    while step < until:
        assert _quiet(step.astimezone(zone), start, end)
        step += timedelta(minutes=7)
    assert _quiet((until - timedelta(seconds=1)).astimezone(zone), start, end) or until - at <= timedelta(seconds=1)
