"""What a masked or delayed signal says about itself, in words, without what the plan withholds.

Two shapes sell the paid plans without giving their value away:

- a :class:`Veil` goes with a signal the viewer may see but with fields hidden: its headline in
  words ("GOOG: unusual volume at 2011-03-04 15:05 UTC"), when the numbers show for this
  viewer (their plan's ``reveal_after``), and the plan that shows them now;
- a *teaser* (:func:`teaser_json`) announces a signal the viewer may not see yet: that one
  fired, in which automation, when the viewer will get it and which plan has it now. It carries
  no key, no id, no number and no hash: nothing the delay sells.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..access import Grant
from ..records import Plan, Signal
from ..store import Connection
from ..store.signals import max_signal_id, signals_after
from .auth import Viewer
from .filters import fmt_ratio, fmt_time

#: A signal released sooner than this is not announced: it arrives itself.
_SOON = timedelta(seconds=2)

__all__ = ["Veil", "headline", "teaser_json", "teasers_after", "upgrade_plan", "veil_for", "veil_json"]


def upgrade_plan(plans: Iterable[Plan], automation: str) -> Plan | None:
    """The plan that shows ``automation``'s signals at once with every field: the cheapest public one.

    Fallback: the public plan with the shortest delay that masks nothing; None if no plan does.
    """
    full = [p for p in plans if p.public and p.covers(automation) and not p.masked_fields]
    if not full:
        return None
    return min(full, key=lambda p: (p.delay, p.price, p.id))


def _kind(signal: Signal) -> str:
    return "unusual volume" if signal.kind in {"spike", "volume_spike"} else signal.kind.replace("_", " ")


def headline(signal: Signal) -> str:
    """The signal in one line; in words when its numbers are hidden.

    >>> from datetime import UTC
    >>> s = Signal(automation="a", key="GOOG", time=datetime(2011, 3, 4, 15, 5, tzinfo=UTC),
    ...            kind="spike", score=1.0, payload={"ratio": 7.43})
    >>> headline(s)
    'GOOG traded 7.4× its usual volume'
    >>> headline(Signal(automation="a", key="GOOG", time=s.time, kind="spike", score=1.0, payload={}))
    'GOOG: unusual volume at 2011-03-04 15:05 UTC'
    >>> headline(Signal(automation="a", key="https://shop.example/k", time=s.time, kind="price_drop", score=1.0,
    ...                 payload={"title": "Kettle"}))
    'Kettle: price drop at 2011-03-04 15:05 UTC'
    """
    ratio = signal.payload.get("ratio")
    if isinstance(ratio, int | float) and not isinstance(ratio, bool):
        return f"{signal.key} traded {fmt_ratio(ratio)} its usual volume"
    title = signal.payload.get("title")  # a product's or an item's name reads better than its URL
    name = title if isinstance(title, str) and title.strip() else signal.key
    return f"{name}: {_kind(signal)} at {fmt_time(signal.time)}"


@dataclass(frozen=True, slots=True)
class Veil:
    """What hides a signal's numbers from one viewer, and what lifts it."""

    hidden: frozenset[str]
    headline: str
    unmasks_at: datetime | None  # when this viewer sees every field (None: never on their plan)
    plan: Plan | None  # the plan that shows them now

    @property
    def message(self) -> str:
        parts = []
        if self.plan is not None:
            parts.append(f"{self.plan.name} sees the numbers now")
        if self.unmasks_at is not None:
            parts.append(f"revealed here on {fmt_time(self.unmasks_at)}")
        return "; ".join(parts) if parts else "The numbers of this signal are not shown on this plan"


def veil_for(stored: Signal, view: Signal, grant: Grant, plans: Iterable[Plan]) -> Veil | None:
    """The veil over ``view`` (``stored`` as ``grant`` shows it), or None when nothing is hidden."""
    hidden = frozenset(stored.payload) - frozenset(view.payload)
    if view.score != view.score and stored.score == stored.score:  # NaN: the score is masked
        hidden |= {"score"}
    if not hidden:
        return None
    return Veil(hidden, headline(view), grant.unmasks_at(stored), upgrade_plan(plans, stored.automation))


def teaser_json(signal: Signal, grant: Grant, plans: Iterable[Plan], title: str) -> dict[str, Any] | None:
    """A signal the viewer will get later, announced without its key, numbers or hash.

    None when ``grant`` never releases it (a key outside the plan): nothing to announce.
    """
    release = grant.release_at(signal)
    if release is None:
        return None
    plan = upgrade_plan(plans, signal.automation)
    return {
        "automation": signal.automation,
        "title": title,
        "kind": _kind(signal),
        "fired_at": signal.time.isoformat().replace("+00:00", "Z"),
        "release_at": release.isoformat().replace("+00:00", "Z"),
        "plan": plan.name if plan is not None else None,
        "plan_id": plan.id if plan is not None else None,
    }


def teasers_after(
    conn: Connection,
    viewer: Viewer,
    after_id: int | None,
    now: datetime,
    plans: Iterable[Plan],
    titles: dict[str, str],
    *,
    automation: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Teasers of the signals stored after id ``after_id`` that ``viewer`` gets only later.

    Returns the id to continue from and the teasers, oldest first. ``after_id`` None starts
    at the newest stored signal (a stream announces what fires from now on). Admins and
    viewers who get everything at once get none.
    """
    if after_id is None:
        return max_signal_id(conn), []
    if viewer.is_admin:
        return after_id, []
    rows = signals_after(conn, after_id, automation=automation, limit=500)
    out = []
    for signal in rows:
        grant = viewer.grant(signal.automation)
        if grant is None:
            continue
        release = grant.release_at(signal)
        if release is not None and release > now + _SOON:
            teaser = teaser_json(signal, grant, plans, titles.get(signal.automation, signal.automation))
            if teaser is not None:
                out.append(teaser)
    return (rows[-1].id or after_id) if rows else after_id, out


def veil_json(signal: Signal, grant: Grant, plans: Iterable[Plan]) -> dict[str, Any]:
    """For a masked signal in the live stream: when its numbers show, and which plan shows them now."""
    unmasks = grant.unmasks_at(signal)
    plan = upgrade_plan(plans, signal.automation)
    return {
        "reveals_at": unmasks.isoformat().replace("+00:00", "Z") if unmasks is not None else None,
        "plan": plan.name if plan is not None else None,
    }
