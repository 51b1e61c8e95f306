"""Who receives which signal, when, and how much of it: pure functions over records.

Nothing here does I/O or reads a clock: every function is told the time, and every datetime
it is given must be aware. :func:`deliver_at` applies the rules in this order:

1. the plan covers the signal's automation;
2. the plan allows the signal's key (:func:`allowed_keys`: a fixed list, a capped watchlist,
   or every key);
3. the subscription is entitled at ``now`` (:func:`is_entitled`: a confirmed subscriber, the
   subscription's state and dates);
4. the signal goes out at ``signal.time + plan.delay``, never earlier.

What the receiver then sees is :func:`mask`\\ ed by the plan's ``masked_fields``; ``"*"``
(:data:`MASK_ALL`) hides every payload field and the score.

**Hashes of masked signals** (see :mod:`signalmint.chain.hashing`). A scheme-2 signal's ``hash``
commits to its numbers through ``commitment = H(salt, score, payload)`` with a random salt:
a masked view keeps ``hash``, ``prev_hash`` and ``commitment`` and drops only the ``salt``
(with the masked numbers), so the track record is checkable by everyone while nothing about
the numbers leaks. A scheme-1 signal (stored before scheme 2) hashes its numbers directly, and
they are low-entropy (hashing each plausible value would confirm a hidden one), so a masked
view of it carries neither hash; nor does a masked scheme-2 view carry a ``prev_hash`` that is
a scheme-1 hash (the bridge between the two).

**Several plans.** A subscriber holding several entitled plans gets, per signal, the best
that any one plan gives, never a mix of axes across plans: see :class:`Grant`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..records import Plan, Preferences, Signal, Subscriber, Subscription

__all__ = [
    "MASK_ALL",
    "PUBLIC_CHANNELS",
    "Grant",
    "QuotaDecision",
    "Tier",
    "allowed_keys",
    "budget_allows",
    "deliver_at",
    "grants",
    "is_entitled",
    "key_allowed",
    "mask",
    "masked_json",
    "month_start",
    "public_grant",
    "quiet_until",
    "quota_decision",
    "visible_payload",
]

#: In ``masked_fields``: hide every payload field and the score.
MASK_ALL = "*"

#: Channels an anonymous visitor can use: the public pages and their feed.
PUBLIC_CHANNELS: frozenset[str] = frozenset({"web", "rss"})

_ZERO = timedelta(0)
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)  # for the examples


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value!r} is naive: give it a timezone (UTC)")


# --- entitlement -----------------------------------------------------------------------------


def is_entitled(subscription: Subscription, plan: Plan, subscriber: Subscriber, at: datetime) -> bool:
    """Whether ``subscription`` (of ``subscriber``, on ``plan``) entitles at instant ``at``.

    Never for an unconfirmed subscriber, nor when the ids do not match (the subscription
    names another plan version or another subscriber). By state: ``trialing`` until
    ``trial_end``; ``active`` always; ``canceled`` until ``period_end``; ``past_due`` for the
    plan's grace days after ``past_due_since``; ``comped`` until ``period_end`` (None: for
    ever); ``expired`` and unknown states never. Every end is exclusive.

    >>> plan = Plan(id="premium", version=1, name="Premium", automations=("spikes",), grace_days=3)
    >>> ann = Subscriber(id=1, email="ann@example.com", created_at=T0, confirmed_at=T0)
    >>> late = Subscription(id=7, subscriber_id=1, plan_id="premium", plan_version=1,
    ...                     state="past_due", started_at=T0, past_due_since=T0)
    >>> is_entitled(late, plan, ann, T0 + timedelta(days=2))
    True
    >>> is_entitled(late, plan, ann, T0 + timedelta(days=3))
    False
    """
    _aware(at, "at")
    if subscription.plan_id != plan.id or subscription.plan_version != plan.version:
        return False
    if subscription.subscriber_id != subscriber.id or not subscriber.confirmed:
        return False
    state = subscription.state
    if state == "active":
        return True
    if state == "trialing":
        return subscription.trial_end is not None and at < subscription.trial_end
    if state == "canceled":
        return subscription.period_end is not None and at < subscription.period_end
    if state == "past_due":
        since = subscription.past_due_since  # compared as a difference: no overflow near year 9999
        return since is not None and at - since < timedelta(days=plan.grace_days)
    if state == "comped":
        return subscription.period_end is None or at < subscription.period_end
    return False


def allowed_keys(plan: Plan, watchlist: AbstractSet[str]) -> frozenset[str] | None:
    """The keys ``plan`` lets a subscriber with ``watchlist`` receive (None: every key).

    ``plan.keys`` alone fixes them. ``plan.watchlist`` alone counts only the first
    ``plan.watchlist`` keys of the watchlist in sorted order, so an over-full watchlist never
    widens access. Both: the watchlist is chosen among ``plan.keys``, then capped.

    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",), watchlist=2)
    >>> sorted(allowed_keys(free, {"TSLA", "AAPL", "MSFT"}))
    ['AAPL', 'MSFT']
    """
    if plan.watchlist is None:
        return None if plan.keys is None else frozenset(plan.keys)
    chosen = watchlist if plan.keys is None else frozenset(watchlist).intersection(plan.keys)
    return frozenset(sorted(chosen)[: max(plan.watchlist, 0)])


def key_allowed(key: str, plan: Plan, watchlist: AbstractSet[str]) -> bool:
    """Whether ``plan`` lets a subscriber with ``watchlist`` receive signals on ``key``.

    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",), watchlist=2)
    >>> [key_allowed(k, free, {"TSLA", "AAPL", "MSFT"}) for k in ("AAPL", "TSLA", "IBM")]
    [True, False, False]
    """
    if plan.watchlist is None:
        return plan.keys is None or key in plan.keys
    if key not in watchlist:
        return False
    keys = allowed_keys(plan, watchlist)
    return keys is not None and key in keys


def deliver_at(
    signal: Signal,
    subscription: Subscription,
    plan: Plan,
    subscriber: Subscriber,
    *,
    watchlist: AbstractSet[str] = frozenset(),
    now: datetime,
) -> datetime | None:
    """When ``signal`` may reach this subscription, or None for never.

    Never unless the plan covers the signal's automation and key and the subscription is
    entitled at ``now``; otherwise ``signal.time + plan.delay`` (a negative delay counts as
    none). The answer may be in the past: deliver at once.

    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             delay=timedelta(minutes=15), watchlist=5)
    >>> bob = Subscriber(id=2, email="bob@example.com", created_at=T0, confirmed_at=T0)
    >>> sub = Subscription(id=8, subscriber_id=2, plan_id="free", plan_version=1,
    ...                    state="active", started_at=T0)
    >>> spike = Signal(automation="spikes", key="AAPL", time=T0, kind="spike", score=7.5,
    ...                payload={"volume": 1.2e6})
    >>> deliver_at(spike, sub, free, bob, watchlist={"AAPL"}, now=T0)
    datetime.datetime(2024, 1, 2, 14, 45, tzinfo=datetime.timezone.utc)
    >>> deliver_at(spike, sub, free, bob, watchlist={"MSFT"}, now=T0) is None
    True
    """
    if signal.automation not in plan.automations or not key_allowed(signal.key, plan, watchlist):
        return None
    if not is_entitled(subscription, plan, subscriber, now):
        return None
    return signal.time + max(plan.delay, _ZERO)


# --- masking ---------------------------------------------------------------------------------


def _hidden(masked: AbstractSet[str], fields: Iterable[str]) -> frozenset[str]:
    """The ones among ``fields`` that ``masked`` hides."""
    present = frozenset(fields)
    return present if MASK_ALL in masked else present & masked


def _hides_score(masked: AbstractSet[str]) -> bool:
    return "score" in masked or MASK_ALL in masked


def _meet(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """Fields hidden by both masks."""
    return b if MASK_ALL in a else a if MASK_ALL in b else a & b


def _join(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """Fields hidden by either mask."""
    return frozenset({MASK_ALL}) if MASK_ALL in a or MASK_ALL in b else a | b


def _masked_signal(signal: Signal, masked: AbstractSet[str]) -> Signal:
    if not masked:
        return signal
    hidden = _hidden(masked, signal.payload)
    v2 = signal.scheme >= 2
    return replace(
        signal,
        payload={k: v for k, v in signal.payload.items() if k not in hidden},
        score=math.nan if _hides_score(masked) else signal.score,
        hash=signal.hash if v2 else "",
        prev_hash=signal.prev_hash if v2 and signal.prev_scheme != 1 else "",
        salt="",
    )


def visible_payload(signal: Signal, plan: Plan) -> dict[str, Any]:
    """The payload fields of ``signal`` that ``plan`` shows.

    >>> plan = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             masked_fields=frozenset({"volume"}))
    >>> spike = Signal(automation="spikes", key="AAPL", time=T0, kind="spike", score=7.5,
    ...                payload={"volume": 1.2e6, "ratio": 8.1})
    >>> visible_payload(spike, plan)
    {'ratio': 8.1}
    """
    return dict(_masked_signal(signal, plan.masked_fields).payload)


def mask(signal: Signal, plan: Plan) -> Signal:
    """``signal`` as ``plan`` shows it: masked payload fields removed, a masked score NaN.

    A plan that masks anything drops the ``salt``, and a scheme-1 signal's hashes (see the
    module docstring); a plan that masks nothing returns ``signal`` itself.

    >>> plan = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             masked_fields=frozenset({"volume", "score"}))
    >>> spike = Signal(automation="spikes", key="AAPL", time=T0, kind="spike", score=7.5,
    ...                payload={"volume": 1.2e6, "ratio": 8.1}, hash="ab12")
    >>> seen = mask(spike, plan)
    >>> seen.payload, seen.score, seen.hash
    ({'ratio': 8.1}, nan, '')
    >>> v2 = mask(replace(spike, scheme=2, salt="5a17", commitment="c0ff"), plan)
    >>> v2.hash, v2.commitment, v2.salt
    ('ab12', 'c0ff', '')
    """
    return _masked_signal(signal, plan.masked_fields)


def masked_json(signal_json: Mapping[str, Any], masked: AbstractSet[str]) -> dict[str, Any]:
    """A copy of a signal in the API's JSON shape with the ``masked`` fields hidden.

    Masked payload keys are removed, ``score`` becomes None when masked, and ``"masked"``
    lists the fields hidden from this signal. When anything is masked, ``salt`` becomes None,
    and so do ``hash`` and ``prev_hash`` unless the signal is scheme 2 (``"scheme": 2``; a
    ``"prev_scheme": 1`` bridge keeps only its hash). The input is not modified.

    >>> doc = {"id": 3, "key": "AAPL", "score": 7.5, "payload": {"volume": 1.2e6, "ratio": 8.1},
    ...        "hash": "ab12", "prev_hash": "cd34"}
    >>> masked_json(doc, {"*"})
    {'id': 3, 'key': 'AAPL', 'score': None, 'payload': {}, 'hash': None, 'prev_hash': None, \
'masked': ['ratio', 'score', 'volume']}
    """
    out = dict(signal_json)
    payload: Mapping[str, Any] = signal_json.get("payload") or {}
    present = set(payload) | ({"score"} if "score" in signal_json else set())
    hidden = _hidden(masked, present)
    out["payload"] = {k: v for k, v in payload.items() if k not in hidden}
    if _hides_score(masked):
        out["score"] = None
    if masked:
        v2 = (signal_json.get("scheme") or 1) >= 2
        if not v2:
            out["hash"] = None
        if not v2 or signal_json.get("prev_scheme") == 1:
            out["prev_hash"] = None
        if "salt" in out:
            out["salt"] = None
    out["masked"] = sorted(hidden)
    return out


# --- several plans, and the public view ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tier:
    """What one plan gives on one automation: its delay, keys (None: all), mask and channels."""

    plan_id: str
    delay: timedelta
    keys: frozenset[str] | None
    masked: frozenset[str]
    channels: frozenset[str]
    reveal_after: timedelta | None = None  # the mask ends this long after signal.time (None: never)

    def masked_at(self, signal: Signal, at: datetime) -> frozenset[str]:
        """The fields this tier hides of ``signal`` at ``at``: none once its reveal term has passed."""
        if self.reveal_after is not None and signal.time + max(self.reveal_after, _ZERO) <= at:
            return frozenset()
        return self.masked

    def unmasks_at(self, signal: Signal) -> datetime | None:
        """When this tier shows every field of ``signal`` (None: never)."""
        release = signal.time + max(self.delay, _ZERO)
        if not self.masked:
            return release
        if self.reveal_after is None:
            return None
        return max(release, signal.time + max(self.reveal_after, _ZERO))

    def allows(self, key: str, channel: str | None = None) -> bool:
        return (self.keys is None or key in self.keys) and (channel is None or channel in self.channels)


@dataclass(frozen=True, slots=True)
class Grant:
    """A subscriber's (or the public's) effective access to one automation.

    The summary fields give the best any tier offers on each axis (``delay`` the shortest,
    ``masked`` the fields every tier hides, ``keys`` and ``channels`` the union) to *show*
    what someone has. They never decide: combined axis by axis they could promise more than
    any one plan gives (real-time AAPL from one plan plus every symbol 15 minutes late from
    another is not real-time on every symbol). :meth:`release_at`, :meth:`hidden_at` and
    :meth:`view` decide per signal over the tiers: a field shows only once a tier that covers
    the key (and channel) and shows the field has released the signal.

    >>> rt_aapl = Tier("aapl", timedelta(0), frozenset({"AAPL"}), frozenset(), frozenset({"web"}))
    >>> late_all = Tier("free", timedelta(minutes=15), None, frozenset({"volume"}), frozenset({"web"}))
    >>> grant = Grant.of("spikes", [rt_aapl, late_all])
    >>> grant.delay, grant.keys, grant.masked
    (datetime.timedelta(0), None, frozenset())
    >>> msft = Signal(automation="spikes", key="MSFT", time=T0, kind="spike", score=7.5, payload={})
    >>> grant.release_at(msft)
    datetime.datetime(2024, 1, 2, 14, 45, tzinfo=datetime.timezone.utc)
    >>> grant.hidden_at(msft, T0) is None, grant.hidden_at(msft, T0 + timedelta(minutes=15))
    (True, frozenset({'volume'}))
    """

    automation: str | None  # None: not checked (the caller picked the grant by automation)
    delay: timedelta
    masked: frozenset[str]
    keys: frozenset[str] | None
    channels: frozenset[str]
    plan_ids: tuple[str, ...]
    tiers: tuple[Tier, ...]

    @classmethod
    def of(cls, automation: str | None, tiers: Iterable[Tier]) -> Grant:
        """The grant made of ``tiers`` (at least one), with its summary fields."""
        ts = tuple(tiers)
        if not ts:
            raise ValueError("a Grant needs at least one tier")
        masked = ts[0].masked
        keys: frozenset[str] | None = frozenset()
        for t in ts:
            masked = _meet(masked, t.masked)
            keys = None if keys is None or t.keys is None else keys | t.keys
        return cls(
            automation=automation,
            delay=min(t.delay for t in ts),
            masked=masked,
            keys=keys,
            channels=frozenset().union(*(t.channels for t in ts)),
            plan_ids=tuple(sorted({t.plan_id for t in ts if t.plan_id})),
            tiers=ts,
        )

    def _tiers_for(self, signal: Signal, channel: str | None) -> list[Tier]:
        if self.automation is not None and signal.automation != self.automation:
            return []
        return [t for t in self.tiers if t.allows(signal.key, channel)]

    def release_at(self, signal: Signal, channel: str | None = None) -> datetime | None:
        """When the first tier releases ``signal`` (on ``channel``, if given); None: never."""
        tiers = self._tiers_for(signal, channel)
        return signal.time + min(max(t.delay, _ZERO) for t in tiers) if tiers else None

    def hidden_at(self, signal: Signal, at: datetime, channel: str | None = None) -> frozenset[str] | None:
        """The fields still hidden at ``at``: those every released tier masks; None: not yet released."""
        _aware(at, "at")
        released = [t for t in self._tiers_for(signal, channel) if signal.time + max(t.delay, _ZERO) <= at]
        if not released:
            return None
        masked = released[0].masked_at(signal, at)
        for t in released[1:]:
            masked = _meet(masked, t.masked_at(signal, at))
        return masked

    def unmasks_at(self, signal: Signal, channel: str | None = None) -> datetime | None:
        """When this grant first shows every field of ``signal`` (its masks expire); None: never.

        >>> free = Tier("free", timedelta(minutes=15), None, frozenset({"volume"}), frozenset({"web"}),
        ...             reveal_after=timedelta(hours=24))
        >>> spike = Signal(automation="spikes", key="MSFT", time=T0, kind="spike", score=7.5,
        ...                payload={"volume": 1.0})
        >>> grant = Grant.of("spikes", [free])
        >>> grant.unmasks_at(spike)
        datetime.datetime(2024, 1, 3, 14, 30, tzinfo=datetime.timezone.utc)
        >>> grant.hidden_at(spike, T0 + timedelta(hours=24) - timedelta(microseconds=1))
        frozenset({'volume'})
        >>> grant.hidden_at(spike, T0 + timedelta(hours=24))
        frozenset()
        """
        times = [u for t in self._tiers_for(signal, channel) if (u := t.unmasks_at(signal)) is not None]
        return min(times) if times else None

    def view(self, signal: Signal, at: datetime, channel: str | None = None) -> Signal | None:
        """``signal`` as this grant shows it at ``at`` (masked), or None if not yet released."""
        masked = self.hidden_at(signal, at, channel)
        return None if masked is None else _masked_signal(signal, masked)


def grants(
    subscriptions_with_plans: Iterable[tuple[Subscription, Plan]],
    subscriber: Subscriber,
    watchlist: AbstractSet[str],
    now: datetime,
) -> dict[str, Grant]:
    """Per automation, the access ``subscriber`` holds at ``now`` through entitled subscriptions.

    >>> ann = Subscriber(id=1, email="ann@example.com", created_at=T0, confirmed_at=T0)
    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             delay=timedelta(minutes=15), masked_fields=frozenset({"volume"}))
    >>> premium = Plan(id="premium", version=2, name="Premium", automations=("spikes", "gaps"),
    ...                channels=frozenset({"web", "email"}))
    >>> subs = [(Subscription(id=i, subscriber_id=1, plan_id=p.id, plan_version=p.version,
    ...                       state="active", started_at=T0), p) for i, p in enumerate([free, premium])]
    >>> g = grants(subs, ann, frozenset(), T0)["spikes"]
    >>> g.delay, g.masked, sorted(g.channels), g.plan_ids
    (datetime.timedelta(0), frozenset(), ['email', 'web'], ('free', 'premium'))
    """
    tiers: dict[str, list[Tier]] = {}
    for subscription, plan in subscriptions_with_plans:
        if not is_entitled(subscription, plan, subscriber, now):
            continue
        tier = Tier(
            plan_id=plan.id,
            delay=max(plan.delay, _ZERO),
            keys=allowed_keys(plan, watchlist),
            masked=plan.masked_fields,
            channels=plan.channels,
            reveal_after=plan.reveal_after,
        )
        for automation in plan.automations:
            tiers.setdefault(automation, []).append(tier)
    return {automation: Grant.of(automation, ts) for automation, ts in sorted(tiers.items())}


def public_grant(plans_covering_automation: Iterable[Plan], automation: str | None = None) -> Grant:
    """What an anonymous visitor sees of one automation, given the plans that cover it.

    The longest delay of those plans; the fields any free plan masks (no free plan: every
    field and the score, ``"*"``); every key, on :data:`PUBLIC_CHANNELS`. An automation
    without plans is open: no delay, nothing masked. Given ``automation``, plans that do not
    cover it are ignored and the grant shows nothing of other automations.

    The public's masks expire with the free plans': after the longest ``reveal_after`` of
    the free plans that mask anything (never when one of them has none, or there is no
    free plan), so a visitor never sees more than a free subscriber.

    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             delay=timedelta(minutes=15), masked_fields=frozenset({"volume"}))
    >>> premium = Plan(id="premium", version=1, name="Premium", automations=("spikes",), price=2900)
    >>> g = public_grant([free, premium])
    >>> g.delay, g.masked
    (datetime.timedelta(seconds=900), frozenset({'volume'}))
    >>> public_grant([premium]).masked
    frozenset({'*'})
    >>> public_grant([replace(free, reveal_after=timedelta(hours=24)), premium]).tiers[0].reveal_after
    datetime.timedelta(days=1)
    """
    plans = [p for p in plans_covering_automation if automation is None or automation in p.automations]
    delay = max((max(p.delay, _ZERO) for p in plans), default=_ZERO)
    masked: frozenset[str] = frozenset() if not plans else frozenset({MASK_ALL})
    free = [p.masked_fields for p in plans if p.free]
    reveal: timedelta | None = None
    if free:
        masked = frozenset()
        for fields in free:
            masked = _join(masked, fields)
        terms = [p.reveal_after for p in plans if p.free and p.masked_fields]
        if terms and all(t is not None for t in terms):
            reveal = max(max(t, _ZERO) for t in terms if t is not None)
    return Grant.of(automation, [Tier("", delay, None, masked, PUBLIC_CHANNELS, reveal)])


# --- API quota, alert budget, quiet hours ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """May this API call go ahead; is it billed as overage; calls left in the quota after it."""

    allowed: bool
    overage: bool
    remaining: int | None  # None: unlimited


def quota_decision(used_this_month: int, plan: Plan) -> QuotaDecision:
    """Whether one more API call is allowed after ``used_this_month`` calls this month.

    >>> pro = Plan(id="pro", version=1, name="Pro", automations=("spikes",),
    ...            channels=frozenset({"api"}), api_quota=1000, overage_price=2)
    >>> quota_decision(10, pro), quota_decision(1000, pro)
    (QuotaDecision(allowed=True, overage=False, remaining=989), \
QuotaDecision(allowed=True, overage=True, remaining=0))
    """
    if used_this_month < 0:
        raise ValueError(f"used_this_month={used_this_month} is negative")
    if not plan.api:
        return QuotaDecision(allowed=False, overage=False, remaining=0)
    if plan.api_quota is None:
        return QuotaDecision(allowed=True, overage=False, remaining=None)
    if used_this_month < plan.api_quota:
        return QuotaDecision(allowed=True, overage=False, remaining=plan.api_quota - used_this_month - 1)
    metered = plan.overage_price > 0
    return QuotaDecision(allowed=metered, overage=metered, remaining=0)


def budget_allows(sent_today: int, plan: Plan, prefs: Preferences | None) -> bool:
    """Whether one more alert fits under the plan's and the subscriber's daily budget.

    >>> plan = Plan(id="p", version=1, name="P", automations=("spikes",), alerts_per_day=50)
    >>> budget_allows(9, plan, Preferences("email", daily_budget=10)), budget_allows(10, plan, None)
    (True, True)
    """
    limits = [n for n in (plan.alerts_per_day, prefs.daily_budget if prefs else None) if n is not None]
    return not limits or sent_today < min(limits)


def quiet_until(at: datetime, prefs: Preferences, tz_name: str) -> datetime | None:
    """When the quiet window that ``at`` falls in ends (UTC), or None when ``at`` is not quiet.

    The window runs from ``prefs.quiet_start`` (inclusive) to ``prefs.quiet_end``
    (exclusive), minutes of the day on the wall clock of ``tz_name``; it wraps midnight when
    the start is later than the end. Its end is the first instant the wall clock reads the
    end minute or later, so a window ending inside a spring-forward gap ends at the jump.

    >>> night = Preferences("email", quiet_start=22 * 60, quiet_end=7 * 60)
    >>> quiet_until(datetime(2024, 7, 1, 21, 30, tzinfo=UTC), night, "Europe/Paris")
    datetime.datetime(2024, 7, 2, 5, 0, tzinfo=datetime.timezone.utc)
    >>> quiet_until(datetime(2024, 7, 1, 12, 0, tzinfo=UTC), night, "Europe/Paris") is None
    True
    """
    _aware(at, "at")
    start, end = prefs.quiet_start, prefs.quiet_end
    if start is None or end is None or start == end:
        return None
    if not (0 <= start < 1440 and 0 <= end < 1440):
        raise ValueError(f"quiet hours {start}-{end}: minutes of the day are 0..1439")
    zone = ZoneInfo(tz_name)
    local = at.astimezone(zone)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    day = local.date() + (timedelta(days=1) if start > end and minute >= start else _ZERO)
    return _wall_clock_reaches(datetime.combine(day, time(end // 60, end % 60)), zone, at)


def _wall_clock_reaches(wall: datetime, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` at which ``zone``'s clock reads ``wall`` or later."""
    for fold in (0, 1):  # an ambiguous wall time (clocks went back) occurs twice
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant > after:
            return instant
    # ``wall`` falls in a gap (clocks jumped over it): find the jump, to the second
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())  # offset after the jump: before it
    hi = math.ceil(wall.replace(tzinfo=zone, fold=0).timestamp())  # offset before: after it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def month_start(at: datetime) -> datetime:
    """The start of the UTC calendar month ``at`` falls in (API quotas reset then).

    >>> month_start(datetime(2024, 3, 31, 23, 30, tzinfo=UTC))
    datetime.datetime(2024, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    _aware(at, "at")
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
