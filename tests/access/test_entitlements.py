"""Entitlements, one rule at a time: states and their boundaries, keys, masking, grants, limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from signalmint.access import (
    MASK_ALL,
    Grant,
    QuotaDecision,
    Tier,
    allowed_keys,
    budget_allows,
    deliver_at,
    grants,
    is_entitled,
    key_allowed,
    mask,
    masked_json,
    month_start,
    public_grant,
    quiet_until,
    quota_decision,
    visible_payload,
)
from signalmint.records import Plan, Preferences, Signal, Subscriber, Subscription

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
US = timedelta(microseconds=1)
MIN15 = timedelta(minutes=15)

FREE = Plan(
    id="free",
    version=1,
    name="Free",
    automations=("spikes",),
    delay=MIN15,
    watchlist=5,
    masked_fields=frozenset({"volume", "score"}),
)
PREMIUM = Plan(
    id="premium",
    version=2,
    name="Premium",
    automations=("spikes", "gaps"),
    price=2900,
    grace_days=3,
    channels=frozenset({"web", "email", "telegram"}),
)
PRO = Plan(
    id="pro",
    version=1,
    name="Pro",
    automations=("spikes",),
    price=9900,
    channels=frozenset({"web", "api"}),
    api_quota=1000,
    overage_price=2,
)
ANN = Subscriber(id=1, email="ann@example.com", created_at=T0, confirmed_at=T0)
NEW = Subscriber(id=1, email="ann@example.com", created_at=T0)  # has not clicked the link


def sub(
    plan: Plan = PREMIUM,
    state: str = "active",
    *,
    trial_end: datetime | None = None,
    period_end: datetime | None = None,
    past_due_since: datetime | None = None,
    ended_at: datetime | None = None,
) -> Subscription:
    return Subscription(
        id=7,
        subscriber_id=1,
        plan_id=plan.id,
        plan_version=plan.version,
        state=state,
        started_at=T0 - timedelta(days=30),
        trial_end=trial_end,
        period_end=period_end,
        past_due_since=past_due_since,
        ended_at=ended_at,
    )


def signal(key: str = "AAPL", automation: str = "spikes", **payload: float) -> Signal:
    return Signal(
        automation=automation,
        key=key,
        time=T0,
        kind="spike",
        score=7.5,
        payload=payload or {"volume": 1.2e6, "ratio": 8.1},
        seq=4,
        hash="ab" * 32,
        prev_hash="cd" * 32,
    )


# --- is_entitled: every state, every boundary exclusive ---------------------------------------


def test_active_is_entitled_and_expired_or_unknown_never() -> None:
    assert is_entitled(sub(state="active"), PREMIUM, ANN, T0)
    assert not is_entitled(sub(state="expired", period_end=T0 + MIN15), PREMIUM, ANN, T0)
    assert not is_entitled(sub(state="paused"), PREMIUM, ANN, T0)


def test_unconfirmed_subscriber_is_never_entitled() -> None:
    for state in ("active", "trialing", "comped"):
        s = sub(state=state, trial_end=T0 + MIN15)
        assert is_entitled(s, PREMIUM, ANN, T0)
        assert not is_entitled(s, PREMIUM, NEW, T0)


def test_trialing_until_trial_end_exclusive() -> None:
    s = sub(state="trialing", trial_end=T0)
    assert is_entitled(s, PREMIUM, ANN, T0 - US)
    assert not is_entitled(s, PREMIUM, ANN, T0)
    assert not is_entitled(sub(state="trialing"), PREMIUM, ANN, T0)  # no trial_end: never


def test_canceled_until_period_end_exclusive() -> None:
    s = sub(state="canceled", period_end=T0)
    assert is_entitled(s, PREMIUM, ANN, T0 - US)
    assert not is_entitled(s, PREMIUM, ANN, T0)
    assert not is_entitled(sub(state="canceled"), PREMIUM, ANN, T0 - timedelta(days=999))


def test_past_due_for_the_grace_days_exclusive() -> None:
    s = sub(state="past_due", past_due_since=T0)
    grace_end = T0 + timedelta(days=PREMIUM.grace_days)
    assert is_entitled(s, PREMIUM, ANN, T0)
    assert is_entitled(s, PREMIUM, ANN, grace_end - US)
    assert not is_entitled(s, PREMIUM, ANN, grace_end)
    assert not is_entitled(sub(state="past_due"), PREMIUM, ANN, T0)
    no_grace = Plan(id="premium", version=2, name="P", automations=("spikes",), grace_days=0)
    assert not is_entitled(s, no_grace, ANN, T0)


def test_comped_until_period_end_or_for_ever() -> None:
    assert is_entitled(sub(state="comped"), PREMIUM, ANN, T0 + timedelta(days=10_000))
    s = sub(state="comped", period_end=T0)
    assert is_entitled(s, PREMIUM, ANN, T0 - US)
    assert not is_entitled(s, PREMIUM, ANN, T0)


def test_mismatched_ids_are_not_entitled() -> None:
    s = sub(state="active")
    assert not is_entitled(s, Plan(id="premium", version=3, name="P", automations=("spikes",)), ANN, T0)
    assert not is_entitled(s, PRO, ANN, T0)
    other = Subscriber(id=2, email="bob@example.com", created_at=T0, confirmed_at=T0)
    assert not is_entitled(s, PREMIUM, other, T0)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        is_entitled(sub(), PREMIUM, ANN, datetime(2024, 1, 2))


def test_other_timezones_compare_as_instants() -> None:
    s = sub(state="trialing", trial_end=T0)
    assert not is_entitled(s, PREMIUM, ANN, T0.astimezone(PARIS))  # 15:30 in Paris: the same instant
    assert is_entitled(s, PREMIUM, ANN, (T0 - US).astimezone(PARIS))


# --- keys ---------------------------------------------------------------------------------------


def test_watchlist_counts_only_the_first_keys_in_sorted_order() -> None:
    overfull = frozenset({"TSLA", "AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOG"})
    assert allowed_keys(FREE, overfull) == frozenset({"AAPL", "AMZN", "GOOG", "META", "MSFT"})
    assert key_allowed("MSFT", FREE, overfull)
    assert not key_allowed("NVDA", FREE, overfull)
    assert not key_allowed("TSLA", FREE, overfull)
    assert not key_allowed("IBM", FREE, overfull)


def test_watchlist_cap_zero_or_negative_allows_nothing() -> None:
    for cap in (0, -1):
        plan = Plan(id="f", version=1, name="F", automations=("spikes",), watchlist=cap)
        assert allowed_keys(plan, {"AAPL"}) == frozenset()
        assert not key_allowed("AAPL", plan, {"AAPL"})


def test_fixed_keys_ignore_the_watchlist() -> None:
    plan = Plan(id="f", version=1, name="F", automations=("spikes",), keys=("AAPL", "MSFT"))
    assert key_allowed("AAPL", plan, frozenset())
    assert not key_allowed("TSLA", plan, {"TSLA"})


def test_keys_and_watchlist_choose_among_the_keys_then_cap() -> None:
    plan = Plan(id="f", version=1, name="F", automations=("s",), keys=("MSFT", "TSLA", "NVDA"), watchlist=1)
    assert allowed_keys(plan, {"AAPL", "TSLA", "NVDA"}) == frozenset({"NVDA"})  # AAPL is not in keys
    assert not key_allowed("AAPL", plan, {"AAPL"})
    assert not key_allowed("TSLA", plan, {"AAPL", "TSLA", "NVDA"})


def test_neither_allows_every_key() -> None:
    assert allowed_keys(PREMIUM, frozenset()) is None
    assert key_allowed("ANYTHING", PREMIUM, frozenset())


# --- deliver_at -----------------------------------------------------------------------------------


def test_deliver_at_adds_the_delay() -> None:
    free_sub = sub(FREE)
    assert deliver_at(signal(), free_sub, FREE, ANN, watchlist={"AAPL"}, now=T0) == T0 + MIN15
    assert deliver_at(signal(), sub(), PREMIUM, ANN, now=T0) == T0


def test_deliver_at_may_be_in_the_past() -> None:
    later = T0 + timedelta(hours=2)
    assert deliver_at(signal(), sub(FREE), FREE, ANN, watchlist={"AAPL"}, now=later) == T0 + MIN15


def test_deliver_at_never_for_other_automation_key_or_no_entitlement() -> None:
    assert deliver_at(signal(automation="other"), sub(), PREMIUM, ANN, now=T0) is None
    assert deliver_at(signal("TSLA"), sub(FREE), FREE, ANN, watchlist={"AAPL"}, now=T0) is None
    assert deliver_at(signal(), sub(state="expired"), PREMIUM, ANN, now=T0) is None
    assert deliver_at(signal(), sub(), PREMIUM, NEW, now=T0) is None
    ended = sub(state="canceled", period_end=T0)
    assert deliver_at(signal(), ended, PREMIUM, ANN, now=T0) is None
    assert deliver_at(signal(), ended, PREMIUM, ANN, now=T0 - US) == T0


def test_a_negative_delay_never_delivers_before_the_signal() -> None:
    plan = Plan(id="odd", version=1, name="Odd", automations=("spikes",), delay=-MIN15)
    assert deliver_at(signal(), sub(plan), plan, ANN, now=T0) == T0


# --- masking -------------------------------------------------------------------------------------


def test_mask_removes_fields_sets_score_nan_and_drops_hashes() -> None:
    seen = mask(signal(), FREE)
    assert dict(seen.payload) == {"ratio": 8.1}
    assert math.isnan(seen.score)
    assert seen.hash == "" and seen.prev_hash == ""
    assert (seen.key, seen.time, seen.seq) == ("AAPL", T0, 4)
    assert visible_payload(signal(), FREE) == {"ratio": 8.1}


def test_mask_all_hides_every_field_and_the_score() -> None:
    plan = Plan(id="x", version=1, name="X", automations=("spikes",), masked_fields=frozenset({MASK_ALL}))
    seen = mask(signal(), plan)
    assert dict(seen.payload) == {}
    assert math.isnan(seen.score) and seen.hash == ""


def test_mask_keeps_the_score_and_hashes_only_when_nothing_is_masked() -> None:
    s = signal()
    assert mask(s, PREMIUM) is s
    volume_only = Plan(id="x", version=1, name="X", automations=("s",), masked_fields=frozenset({"volume"}))
    seen = mask(s, volume_only)
    assert seen.score == 7.5
    assert seen.hash == ""  # masked fields go into the hash: it would confirm a guess
    absent = mask(signal(ratio=2.0), volume_only)  # nothing of this one is hidden, but prev_hash
    assert absent.hash == "" and absent.prev_hash == ""  # commits to a signal whose volume is


def test_a_payload_field_named_score_is_masked_with_the_score() -> None:
    seen = mask(signal(score=7.5, ratio=3.0), FREE)
    assert dict(seen.payload) == {"ratio": 3.0}


def test_masked_json_hides_fields_score_and_hashes_without_mutating() -> None:
    doc = {
        "id": 3,
        "automation": "spikes",
        "seq": 4,
        "key": "AAPL",
        "time": "2024-01-02T14:30:00Z",
        "kind": "spike",
        "score": 7.5,
        "payload": {"volume": 1.2e6, "ratio": 8.1},
        "hash": "ab",
        "prev_hash": "cd",
        "url": "/s/3",
    }
    out = masked_json(doc, frozenset({"volume", "score", "not-there"}))
    assert out["payload"] == {"ratio": 8.1}
    assert out["score"] is None and out["hash"] is None and out["prev_hash"] is None
    assert out["masked"] == ["score", "volume"]
    assert out["url"] == "/s/3" and out["key"] == "AAPL"
    assert doc["payload"] == {"volume": 1.2e6, "ratio": 8.1} and doc["score"] == 7.5  # untouched
    everything = masked_json(doc, {MASK_ALL})
    assert everything["payload"] == {} and everything["masked"] == ["ratio", "score", "volume"]
    clear = masked_json(doc, frozenset())
    assert clear["hash"] == "ab" and clear["score"] == 7.5 and clear["masked"] == []


# --- grants: several plans -----------------------------------------------------------------------


def holdings(*plans: Plan, state: str = "active") -> list[tuple[Subscription, Plan]]:
    return [(sub(p, state), p) for p in plans]


def test_premium_and_free_give_premium() -> None:
    g = grants(holdings(FREE, PREMIUM), ANN, {"AAPL"}, T0)
    assert set(g) == frozenset({"gaps", "spikes"})
    spikes = g["spikes"]
    assert spikes.delay == timedelta(0) and spikes.masked == frozenset() and spikes.keys is None
    assert spikes.plan_ids == ("free", "premium")
    assert spikes.channels == frozenset({"web", "email", "telegram"})
    assert spikes.release_at(signal("TSLA")) == T0
    assert spikes.hidden_at(signal("TSLA"), T0) == frozenset()
    assert g["gaps"].plan_ids == ("premium",)


def test_combining_plans_never_mixes_axes_into_more_than_one_plan_gives() -> None:
    aapl_now = Plan(id="aapl", version=1, name="A", automations=("spikes",), price=900, keys=("AAPL",))
    all_late = Plan(
        id="late", version=1, name="L", automations=("spikes",), delay=MIN15, masked_fields=frozenset({"volume"})
    )
    g = grants(holdings(aapl_now, all_late), ANN, frozenset(), T0)["spikes"]
    assert (g.delay, g.keys, g.masked) == (timedelta(0), None, frozenset())  # the summary
    tsla = signal("TSLA")
    assert g.release_at(tsla) == T0 + MIN15  # not real time: only the late plan covers TSLA
    assert g.view(tsla, T0 + MIN15 - US) is None
    seen = g.view(tsla, T0 + MIN15)
    assert seen is not None and "volume" not in seen.payload  # and masked, as that plan says
    aapl = g.view(signal("AAPL"), T0)
    assert aapl is not None and aapl.payload["volume"] == 1.2e6 and aapl.hash


def test_grant_channels_decide_per_tier() -> None:
    web_late = Tier("free", MIN15, None, frozenset(), frozenset({"web"}))
    mail_now = Tier("alerts", timedelta(0), None, frozenset({"volume"}), frozenset({"email"}))
    g = Grant.of("spikes", [web_late, mail_now])
    assert g.release_at(signal(), "web") == T0 + MIN15
    assert g.release_at(signal(), "email") == T0
    assert g.release_at(signal(), "telegram") is None
    assert g.hidden_at(signal(), T0 + MIN15, "email") == frozenset({"volume"})
    assert g.hidden_at(signal(), T0 + MIN15) == frozenset()


def test_grant_masks_meet_with_star_and_refuse_other_automations() -> None:
    a = Tier("a", timedelta(0), None, frozenset({MASK_ALL}), frozenset({"web"}))
    b = Tier("b", timedelta(0), None, frozenset({"volume"}), frozenset({"web"}))
    g = Grant.of("spikes", [a, b])
    assert g.masked == frozenset({"volume"})
    assert g.hidden_at(signal(), T0) == frozenset({"volume"})
    assert g.release_at(signal(automation="gaps")) is None
    with pytest.raises(ValueError):
        Grant.of("spikes", [])


def test_grants_count_only_entitled_subscriptions() -> None:
    assert grants(holdings(PREMIUM, state="expired"), ANN, frozenset(), T0) == {}
    assert grants(holdings(PREMIUM), NEW, frozenset(), T0) == {}
    g = grants([(sub(FREE), FREE), (sub(PREMIUM, "expired"), PREMIUM)], ANN, {"MSFT"}, T0)
    assert g["spikes"].plan_ids == ("free",) and g["spikes"].keys == frozenset({"MSFT"})


# --- the public view -----------------------------------------------------------------------------


def test_public_grant_longest_delay_and_free_masks() -> None:
    slow_free = Plan(
        id="free2", version=1, name="F", automations=("spikes",), delay=timedelta(hours=1),
        masked_fields=frozenset({"ratio"}),
    )  # fmt: skip
    g = public_grant([FREE, PREMIUM, slow_free], "spikes")
    assert g.delay == timedelta(hours=1)
    assert g.masked == frozenset({"volume", "score", "ratio"})
    assert g.release_at(signal()) == T0 + timedelta(hours=1)
    assert g.release_at(signal(automation="gaps")) is None
    seen = g.view(signal(), T0 + timedelta(hours=1))
    assert seen is not None and dict(seen.payload) == {} and math.isnan(seen.score)


def test_public_grant_without_free_plan_masks_everything() -> None:
    g = public_grant([PREMIUM, PRO])
    assert g.masked == {MASK_ALL}
    seen = g.view(signal(), T0)
    assert seen is not None and dict(seen.payload) == {} and math.isnan(seen.score) and seen.hash == ""


def test_public_grant_without_plans_is_open() -> None:
    g = public_grant([])
    assert g.delay == timedelta(0) and g.masked == frozenset() and g.keys is None
    assert g.view(signal(), T0) == signal()
    assert public_grant([PRO], "gaps").masked == frozenset()  # PRO does not cover gaps


# --- API quota and alert budgets -----------------------------------------------------------------


def test_quota() -> None:
    assert quota_decision(0, PREMIUM) == QuotaDecision(allowed=False, overage=False, remaining=0)
    unlimited = Plan(id="u", version=1, name="U", automations=(), channels=frozenset({"api"}))
    assert quota_decision(10**9, unlimited) == QuotaDecision(True, False, None)
    assert quota_decision(0, PRO) == QuotaDecision(True, False, 999)
    assert quota_decision(999, PRO) == QuotaDecision(True, False, 0)
    assert quota_decision(1000, PRO) == QuotaDecision(True, True, 0)
    no_overage = Plan(id="p", version=1, name="P", automations=(), channels=frozenset({"api"}), api_quota=5)
    assert quota_decision(4, no_overage).allowed
    assert quota_decision(5, no_overage) == QuotaDecision(False, False, 0)
    with pytest.raises(ValueError):
        quota_decision(-1, PRO)


def test_budget_is_the_smaller_of_plan_and_preferences() -> None:
    capped = Plan(id="c", version=1, name="C", automations=(), alerts_per_day=3)
    assert budget_allows(10**6, PREMIUM, None)
    assert budget_allows(10**6, PREMIUM, Preferences("email"))
    assert budget_allows(2, capped, None) and not budget_allows(3, capped, None)
    assert not budget_allows(2, capped, Preferences("email", daily_budget=2))
    assert budget_allows(2, capped, Preferences("email", daily_budget=5))
    assert not budget_allows(0, PREMIUM, Preferences("email", daily_budget=0))


# --- quiet hours ---------------------------------------------------------------------------------

NIGHT = Preferences("email", quiet_start=22 * 60, quiet_end=7 * 60)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_quiet_window_across_midnight() -> None:
    # Paris is UTC+1 in January
    assert quiet_until(utc(2024, 1, 10, 20, 59), NIGHT, "Europe/Paris") is None
    assert quiet_until(utc(2024, 1, 10, 21, 0), NIGHT, "Europe/Paris") == utc(2024, 1, 11, 6, 0)  # 22:00
    assert quiet_until(utc(2024, 1, 10, 23, 30), NIGHT, "Europe/Paris") == utc(2024, 1, 11, 6, 0)
    assert quiet_until(utc(2024, 1, 11, 5, 59, 59), NIGHT, "Europe/Paris") == utc(2024, 1, 11, 6, 0)
    assert quiet_until(utc(2024, 1, 11, 6, 0), NIGHT, "Europe/Paris") is None  # 07:00: end exclusive


def test_quiet_window_within_a_day() -> None:
    lunch = Preferences("email", quiet_start=12 * 60, quiet_end=13 * 60 + 30)
    assert quiet_until(utc(2024, 1, 10, 11, 0), lunch, "UTC") is None
    assert quiet_until(utc(2024, 1, 10, 12, 0), lunch, "UTC") == utc(2024, 1, 10, 13, 30)
    assert quiet_until(utc(2024, 1, 10, 13, 30), lunch, "UTC") is None


def test_no_quiet_window() -> None:
    assert quiet_until(T0, Preferences("email"), "Europe/Paris") is None
    assert quiet_until(T0, Preferences("email", quiet_start=60, quiet_end=60), "UTC") is None
    with pytest.raises(ValueError):
        quiet_until(T0, Preferences("email", quiet_start=0, quiet_end=1440), "UTC")


def test_quiet_hours_across_spring_forward() -> None:
    # Paris, 2024-03-31 01:00 UTC: 02:00 CET -> 03:00 CEST
    assert quiet_until(utc(2024, 3, 30, 22, 0), NIGHT, "Europe/Paris") == utc(2024, 3, 31, 5, 0)
    ends_in_gap = Preferences("email", quiet_start=22 * 60, quiet_end=2 * 60 + 30)
    assert quiet_until(utc(2024, 3, 31, 0, 30), ends_in_gap, "Europe/Paris") == utc(2024, 3, 31, 1, 0)
    # New York, 2024-03-10 07:00 UTC: 02:00 EST -> 03:00 EDT
    assert quiet_until(utc(2024, 3, 10, 4, 0), NIGHT, "America/New_York") == utc(2024, 3, 10, 11, 0)


def test_quiet_hours_across_fall_back() -> None:
    # Paris, 2024-10-27 01:00 UTC: 03:00 CEST -> 02:00 CET, so 02:00-02:59 happens twice
    assert quiet_until(utc(2024, 10, 26, 21, 0), NIGHT, "Europe/Paris") == utc(2024, 10, 27, 6, 0)
    early = Preferences("email", quiet_start=60, quiet_end=2 * 60 + 30)
    assert quiet_until(utc(2024, 10, 26, 23, 10), early, "Europe/Paris") == utc(2024, 10, 27, 0, 30)
    assert quiet_until(utc(2024, 10, 27, 0, 40), early, "Europe/Paris") is None  # 02:40 CEST
    assert quiet_until(utc(2024, 10, 27, 1, 10), early, "Europe/Paris") == utc(2024, 10, 27, 1, 30)
    # New York, 2024-11-03 06:00 UTC: 02:00 EDT -> 01:00 EST
    assert quiet_until(utc(2024, 11, 3, 3, 0), NIGHT, "America/New_York") == utc(2024, 11, 3, 12, 0)


def test_month_start_is_utc() -> None:
    assert month_start(utc(2024, 3, 31, 23, 59, 59)) == utc(2024, 3, 1)
    paris_first = datetime(2024, 3, 1, 0, 30, tzinfo=PARIS)  # 23:30 UTC on Feb 29
    assert month_start(paris_first) == utc(2024, 2, 1)
    with pytest.raises(ValueError):
        month_start(datetime(2024, 3, 1))
