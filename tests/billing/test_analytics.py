"""Revenue analytics over hand-built histories with known MRR, churn, conversion and payments.

Subscriptions go through ``start_subscription`` / ``set_subscription_state`` (which append to
``subscription_history``) at explicit times, on SQLite and PostgreSQL; every expected figure is
worked out by hand in the comments from the story in :func:`story`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete

from signalmint.billing.analytics import Figures, RevenueReport, buckets, legacy_points, revenue_report, split
from signalmint.records import HistoryPoint, LegacySubscription, PaymentLine, Plan, RevenueData
from signalmint.store import Database
from signalmint.store.accounts import ensure_subscriber, set_subscription_state, start_subscription
from signalmint.store.plans import sync_plans
from signalmint.store.revenue import load_revenue
from signalmint.store.tables import ledger, payments, subscription_history

AUTOMATIONS = ("alpha", "beta", "gamma")
PLANS = [
    Plan("free", 0, "Free", ("*",)),
    Plan("basic", 0, "Basic", ("alpha",), price=1000, trial_days=14),
    Plan("bundle", 0, "Bundle", ("*",), price=1000, trial_days=14),  # 1000 over three automations
    Plan("yearly", 0, "Yearly", ("beta",), price=12000, interval="year"),  # 1000 a month
]
NOW = datetime(2024, 4, 10, tzinfo=UTC)
MARCH = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))


def day(month: int, d: int) -> datetime:
    return datetime(2024, month, d, tzinfo=UTC)


def story(conn: Connection) -> dict[str, int]:
    """Who did what (subscribers a..g), and the payments and credit movements around March 2024."""
    plans = {p.id: p for p in sync_plans(conn, PLANS, day(1, 1))}
    ids: dict[str, int] = {}

    def person(name: str) -> int:
        ids[name] = ensure_subscriber(conn, f"{name}@example.com", day(1, 1)).id
        return ids[name]

    # a: basic, paying 1000 from Jan 10 on.
    start_subscription(conn, person("a"), plans["basic"], day(1, 10), origin="test", state="active")
    # b: bundle from Feb 5, canceled at period end on Mar 10 (still paying), moved to free Mar 20: churned.
    sub = start_subscription(conn, person("b"), plans["bundle"], day(2, 5), origin="test", state="active")
    set_subscription_state(conn, sub.id, day(3, 10), state="canceled")
    start_subscription(conn, ids["b"], plans["free"], day(3, 20), origin="test")
    # c: basic trial from Feb 20, paying from Mar 5: a converted trial and a new subscriber in March.
    sub = start_subscription(conn, person("c"), plans["basic"], day(2, 20), origin="test")
    assert sub.state == "trialing"
    set_subscription_state(conn, sub.id, day(3, 5), state="active")
    # d: bundle trial from Mar 2 that expires on Mar 16: a trial that ended without converting.
    sub = start_subscription(conn, person("d"), plans["bundle"], day(3, 2), origin="test")
    set_subscription_state(conn, sub.id, day(3, 16), state="expired")
    # e: yearly (1000 a month) from Mar 15: new in March.
    start_subscription(conn, person("e"), plans["yearly"], day(3, 15), origin="test", state="active")
    # f: bundle from Jan 1, past due from Mar 25 (still counted as paying).
    sub = start_subscription(conn, person("f"), plans["bundle"], day(1, 1), origin="test", state="active")
    set_subscription_state(conn, sub.id, day(3, 25), state="past_due", past_due_since=day(3, 25))
    # g: basic trial from Mar 25 until Apr 8, never acted upon: it lapses on Apr 8.
    start_subscription(conn, person("g"), plans["basic"], day(3, 25), origin="test")

    def paid(when: datetime, kind: str, amount: int, fee: int, **more: Any) -> None:
        values = {"provider": "local", "kind": kind, "amount": amount, "currency": "usd", "fee": fee,
                  "refunded": 0, "status": "paid", "note": "", "created_at": when, **more}  # fmt: skip
        conn.execute(payments.insert().values(**values))

    paid(day(3, 5), "subscription", 1000, 59, plan_id="basic", subscriber_id=ids["c"])
    paid(day(3, 10), "subscription", 1000, 59, plan_id="bundle", refunded=1000, status="refunded")
    paid(day(3, 12), "tip", 500, 45, automation="beta")
    paid(day(3, 20), "credits", 2000, 88, subscriber_id=ids["a"])
    paid(day(3, 21), "subscription", 1000, 59, plan_id="basic", status="failed")  # not counted
    paid(day(3, 22), "tip", 700, 0, automation="gamma", currency="eur")
    paid(day(2, 10), "subscription", 1000, 59, plan_id="bundle")  # February
    moves = [
        (day(2, 28), 9_000_000, "topup"), (day(3, 3), 5_000_000, "topup"), (day(3, 4), -10_000, "alert"),
        (day(3, 5), -2_500, "api_call"), (day(3, 6), 1_000_000, "grant"), (day(3, 7), -4_000, "adjust"),
    ]  # fmt: skip
    for i, (when, delta, reason) in enumerate(moves):
        conn.execute(ledger.insert().values(subscriber_id=ids["a"], delta=delta, balance_after=0, reason=reason,
                                            ref=f"r{i}", created_at=when))  # fmt: skip
    return ids


def report(db: Database, start: datetime, end: datetime, now: datetime = NOW) -> RevenueReport:
    data = db.read_sync(load_revenue, start, end, automations=AUTOMATIONS, now=now, credit_currency="usd")
    return revenue_report(data, start, end)


def of(rows: tuple[Figures, ...], currency: str = "usd") -> Figures:
    return next(f for f in rows if f.currency == currency)


def by_name(r: RevenueReport) -> dict[str, Figures]:
    return {name: of(rows) for name, rows in r.period.automations}


@pytest.fixture
def march(db: Database) -> RevenueReport:
    db.write_sync(story)
    return report(db, *MARCH)


def test_total_figures_for_march(march: RevenueReport) -> None:
    total = of(march.period.total)
    # At Mar 1: a 1000 + b 1000 + f 1000 (c is trialing). At Apr 1: a, c, e and f pay 1000 each.
    assert (total.mrr_start, total.mrr, total.arr) == (3000, 4000, 48000)
    assert (total.paying_start, total.paying) == (3, 4)
    assert (total.new, total.churned) == (2, 1)  # c (Mar 5) and e (Mar 15); b went to free
    assert total.churn_rate == pytest.approx(1 / 3)
    assert total.arpu == 1000
    assert (total.trials_ended, total.trials_converted, total.trial_conversion) == (2, 1, 0.5)  # c yes, d no
    # usd payments: 1000 + 1000 (refunded) + 500 tip + 2000 credits; the failed one and February's don't count.
    assert (total.gross, total.refunds, total.fees, total.net) == (4500, 1000, 251, 3249)
    assert (total.paid_subscriptions, total.paid_credits, total.paid_tips, total.paid_manual) == (2000, 2000, 500, 0)
    assert (total.credits_sold, total.credits_consumed) == (5_000_000, 12_500)  # grants and adjustments aside
    plans = {p.plan_id: (p.subscribers, p.paying, p.trialing, p.mrr) for p in total.by_plan}
    # basic: a, c paying and g trialing; d's expired bundle trial is no longer a subscriber.
    assert plans == {
        "basic": (3, 2, 1, 2000),
        "bundle": (1, 1, 0, 1000),
        "free": (1, 0, 0, 0),
        "yearly": (1, 1, 0, 1000),
    }


def test_other_currencies_are_never_added(march: RevenueReport) -> None:
    assert march.currencies == ("usd", "eur")
    eur = of(march.period.total, "eur")
    assert (eur.gross, eur.net, eur.mrr, eur.paying, eur.credits_sold) == (700, 700, 0, 0, None)
    assert of(dict(march.period.automations)["gamma"], "eur").paid_tips == 700


def test_per_automation_split_and_counts(march: RevenueReport) -> None:
    alpha, beta, gamma = (by_name(march)[n] for n in AUTOMATIONS)
    # Apr 1: f's bundle 1000 splits 334/333/333; alpha adds a and c (basic), beta e (yearly).
    assert (alpha.mrr, beta.mrr, gamma.mrr) == (2334, 1333, 333)
    # Mar 1: b's and f's bundles, 2000, split 667/667/666.
    assert (alpha.mrr_start, beta.mrr_start, gamma.mrr_start) == (1667, 667, 666)
    assert (alpha.paying_start, beta.paying_start, gamma.paying_start) == (3, 2, 2)
    assert (alpha.paying, beta.paying, gamma.paying) == (3, 2, 1)
    assert (alpha.new, beta.new, gamma.new) == (1, 1, 0)
    assert (alpha.churned, beta.churned, gamma.churned) == (1, 1, 1)
    assert (alpha.arpu, beta.arpu, gamma.arpu) == (778, 667, 333)  # 2334/3, 1333/2 = 666.5 rounded up
    # c's basic trial is alpha's only; d's bundle trial counts in all three.
    assert [(f.trials_ended, f.trials_converted) for f in (alpha, beta, gamma)] == [(2, 1), (1, 0), (1, 0)]
    # gross: 1000 basic to alpha, the 1000 bundle 334/333/333, the tip to beta; fees 59 -> 20/20/19.
    assert [(f.gross, f.refunds, f.fees, f.net) for f in (alpha, beta, gamma)] == [
        (1334, 334, 79, 921), (833, 333, 65, 435), (333, 333, 19, -19)
    ]  # fmt: skip
    assert alpha.credits_sold is None
    assert [(p.plan_id, p.mrr) for p in alpha.by_plan] == [("basic", 2000), ("bundle", 334), ("free", 0)]


def test_automations_add_up_to_the_total(march: RevenueReport) -> None:
    assert march.period.unattributed is not None  # the credit top-up names no automation
    rest = of(march.period.unattributed)
    assert (rest.gross, rest.fees, rest.net, rest.mrr) == (2000, 88, 1912, 0)
    total = of(march.period.total)
    parts = [*by_name(march).values(), rest]
    for field in ("mrr", "mrr_start", "gross", "refunds", "fees", "paid_tips", "paid_subscriptions"):
        assert sum(getattr(f, field) for f in parts) == getattr(total, field), field


def test_monthly_series(db: Database) -> None:
    db.write_sync(story)
    r = report(db, day(1, 1), day(4, 1))
    assert r.step == "month"
    assert [(w.start.month, w.end.month) for w in r.series] == [(1, 2), (2, 3), (3, 4)]
    totals = [of(w.total) for w in r.series]
    # end of Jan: a and f; end of Feb: + b; end of Mar: a, c, e, f.
    assert [(f.mrr, f.paying, f.new, f.churned) for f in totals] == [(2000, 2, 2, 0), (3000, 3, 1, 0), (4000, 4, 2, 1)]
    assert [f.gross for f in totals] == [0, 1000, 4500]
    # f started at 00:00 on Jan 1, the period's start: new in the period, not paying at its start.
    period = of(r.period.total)
    assert (period.new, period.churned, period.paying_start, period.mrr_start) == (5, 0, 0, 0)


def test_daily_series_and_a_lapsed_trial(db: Database) -> None:
    db.write_sync(story)
    r = report(db, day(4, 1), day(4, 9))
    assert r.step == "day" and len(r.series) == 8
    assert {of(w.total).mrr for w in r.series} == {4000}
    total = of(r.period.total)
    # g's trial was left trialing; its trial_end (Apr 8) passed before now (Apr 10): ended, not converted.
    assert (total.trials_ended, total.trials_converted) == (1, 0)
    assert [of(w.total).trials_ended for w in r.series] == [0] * 7 + [1]
    # the same period seen on Apr 5, before g's trial ended: no trial ended.
    early = report(db, day(4, 1), day(4, 9), now=day(4, 5))
    assert early.end == day(4, 5) and of(early.period.total).trials_ended == 0


def test_plan_change_is_not_churn_and_upgrade_after_trial_converts(db: Database) -> None:
    def write(conn: Connection) -> None:
        plans = {p.id: p for p in sync_plans(conn, PLANS, day(1, 1))}
        who = ensure_subscriber(conn, "h@example.com", day(1, 1)).id
        start_subscription(conn, who, plans["basic"], day(2, 1), origin="test", state="active")
        start_subscription(conn, who, plans["bundle"], day(3, 10), origin="test", state="active")  # upgrade
        other = ensure_subscriber(conn, "i@example.com", day(1, 1)).id
        start_subscription(conn, other, plans["basic"], day(3, 1), origin="test")  # trial
        start_subscription(conn, other, plans["yearly"], day(3, 8), origin="test", state="active")

    db.write_sync(write)
    total = of(report(db, *MARCH).period.total)
    assert (total.paying_start, total.paying, total.churned, total.new) == (1, 2, 0, 1)
    assert (total.mrr_start, total.mrr) == (1000, 2000)
    assert (total.trials_ended, total.trials_converted) == (1, 1)  # the basic trial ended paying (on yearly)
    r = report(db, *MARCH)
    # the trial was basic's (alpha); the subscriber now pays for beta only: not converted for alpha.
    assert (by_name(r)["alpha"].trials_ended, by_name(r)["alpha"].trials_converted) == (1, 0)


def test_subscriptions_from_before_the_history_table(db: Database) -> None:
    def write(conn: Connection) -> None:
        plans = {p.id: p for p in sync_plans(conn, PLANS, day(1, 1))}
        old = ensure_subscriber(conn, "old@example.com", day(1, 1)).id
        start_subscription(conn, old, plans["basic"], day(1, 1), origin="signup", state="active")
        lapsed = ensure_subscriber(conn, "lapsed@example.com", day(1, 1)).id
        first = start_subscription(conn, lapsed, plans["bundle"], day(1, 1), origin="signup")  # trial to Jan 15
        start_subscription(conn, lapsed, plans["free"], day(2, 10), origin="signup")  # ends the bundle one
        assert first.trial_end == day(1, 15)
        conn.execute(delete(subscription_history))  # as if opened before migration 0005

    db.write_sync(write)
    r = report(db, day(1, 1), day(4, 1))
    # "old" pays 1000 throughout; the bundle one is taken to have paid from its trial's end to Feb 10.
    assert [(of(w.total).mrr, of(w.total).paying) for w in r.series] == [(2000, 2), (1000, 1), (1000, 1)]
    jan = of(r.series[0].total)
    assert (jan.trials_ended, jan.trials_converted, jan.new) == (1, 1, 2)
    assert of(r.series[1].total).churned == 1


def test_legacy_points() -> None:
    plan = PLANS[1]
    sub = LegacySubscription(1, 7, "basic", 1, "canceled", day(1, 1))
    assert [(p.state, p.mrr, p.at) for p in legacy_points(sub, plan, NOW)] == [("canceled", 1000, day(1, 1))]
    trial = LegacySubscription(2, 7, "basic", 1, "trialing", day(4, 1), trial_end=day(4, 15))
    assert [(p.state, p.mrr) for p in legacy_points(trial, plan, NOW)] == [("trialing", 0)]
    comped = LegacySubscription(3, 7, "basic", 1, "expired", day(1, 1), ended_at=day(2, 1), origin="comp")
    assert [(p.state, p.mrr, p.at) for p in legacy_points(comped, plan, NOW)] == [
        ("comped", 0, day(1, 1)), ("ended", 0, day(2, 1))
    ]  # fmt: skip


def test_buckets_and_split() -> None:
    step, parts = buckets(day(1, 31), day(3, 5))
    assert step == "day" and len(parts) == 34 and parts[0] == (day(1, 31), day(2, 1))
    step, parts = buckets(datetime(2023, 11, 20, tzinfo=UTC), day(2, 2))
    assert (
        step == "month"
        and [a.month for a, _ in parts] == [11, 12, 1, 2]
        and parts[1][0] == datetime(2023, 12, 1, tzinfo=UTC)
    )
    assert split(2, ["a", "b", "c"]) == {"a": 1, "b": 1, "c": 0}


def test_an_empty_store_still_has_a_row_in_the_main_currency(db: Database) -> None:
    r = report(db, *MARCH)
    assert r.currencies == ("usd",) and r.period.unattributed is None
    total = of(r.period.total)
    assert (total.mrr, total.churn_rate, total.arpu, total.trial_conversion) == (0, None, None, None)
    assert [name for name, _ in r.period.automations] == list(AUTOMATIONS)
    with pytest.raises(ValueError, match="empty period"):
        revenue_report(RevenueData((), {}, (), now=NOW), NOW, NOW + timedelta(days=1))


# --- properties: the split always adds up, whatever the history ------------------------------

PLAN_BOOK = {(p.id, 1): Plan(p.id, 1, p.name, p.automations, price=p.price, interval=p.interval) for p in PLANS}
points = st.lists(
    st.tuples(
        st.integers(1, 6),  # subscription
        st.sampled_from(sorted(PLAN_BOOK)),
        st.sampled_from(["trialing", "active", "past_due", "canceled", "ended"]),
        st.integers(0, 5000),  # mrr
        st.integers(0, 120),  # day
    ),
    max_size=30,
)

payment_rows = st.lists(
    st.tuples(
        st.integers(0, 9999), st.integers(0, 500), st.sampled_from([None, "basic", "bundle"]), st.integers(0, 120)
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(points, payment_rows)
def test_per_automation_money_adds_up_to_the_total(
    rows: list[tuple[int, tuple[str, int], str, int, int]], pays: list[tuple[int, int, str | None, int]]
) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    history = sorted(
        (HistoryPoint(s, s, plan[0], plan[1], state, 0 if state in ("trialing", "ended") else mrr, "usd",
                      base + timedelta(days=d)) for s, plan, state, mrr, d in rows),
        key=lambda p: p.at,
    )  # fmt: skip
    lines = tuple(
        PaymentLine("subscription", amount, "usd", fee, 0, "paid", base + timedelta(days=d), plan_id=plan)
        for amount, fee, plan, d in pays
    )
    data = RevenueData(tuple(history), PLAN_BOOK, AUTOMATIONS, now=base + timedelta(days=200), payments=lines)
    r = revenue_report(data, base + timedelta(days=30), base + timedelta(days=150))
    windows = [r.period, *r.series]
    for w in windows:
        parts = [figs[0] for _, figs in w.automations] + ([w.unattributed[0]] if w.unattributed else [])
        for field in ("mrr", "mrr_start", "gross", "fees"):
            assert sum(getattr(f, field) for f in parts) == getattr(w.total[0], field)
    assert sum(of(w.total).new for w in r.series) == of(r.period.total).new
    assert sum(of(w.total).trials_ended for w in r.series) == of(r.period.total).trials_ended
