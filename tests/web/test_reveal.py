"""Masks expire (``reveal_after``), masked signals say what they are, delayed ones are announced.

The no-leak side: a veiled signal's page, a teaser on the page or in the stream never carry the
hidden numbers (nor, for a teaser, the key); the revealed side: once the term passes, every
field shows, to the public and to the free plan alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from signalmint.access import grants, public_grant
from signalmint.config import PlanConfig
from signalmint.records import Plan, Signal, Subscriber, Subscription
from signalmint.store import Database, append_signals

from .test_access_api import NUMBERS, World
from .test_api import _read_events

T0 = datetime(2011, 3, 4, 15, 5, tzinfo=UTC)
FREE = Plan(
    id="free",
    version=1,
    name="Free",
    automations=("spikes",),
    delay=timedelta(minutes=15),
    masked_fields=frozenset(NUMBERS),
    reveal_after=timedelta(hours=24),
)
PREMIUM = Plan(id="premium", version=1, name="Premium", automations=("spikes",), price=2900)
SPIKE = Signal("spikes", "GOOG", T0, "volume_spike", 7.5, {"volume": 99189.0, "ratio": 7.4, "z": 9.1})


@pytest.mark.parametrize("who", ["public", "free"])
def test_masks_expire_exactly_at_the_reveal_term(who: str) -> None:
    if who == "public":
        grant = public_grant([FREE, PREMIUM], "spikes")
    else:
        ann = Subscriber(id=1, email="ann@example.com", created_at=T0, confirmed_at=T0)
        sub = Subscription(id=1, subscriber_id=1, plan_id="free", plan_version=1, state="active", started_at=T0)
        grant = grants([(sub, FREE)], ann, frozenset(), T0)["spikes"]
    term = T0 + timedelta(hours=24)
    assert grant.hidden_at(SPIKE, T0 + timedelta(minutes=15) - timedelta(microseconds=1)) is None  # not released
    before = grant.view(SPIKE, term - timedelta(microseconds=1))
    assert before is not None and before.payload == {} and before.score != before.score
    after = grant.view(SPIKE, term)
    assert after is not None and after.payload == SPIKE.payload and after.score == 7.5
    assert grant.unmasks_at(SPIKE) == term


def test_without_a_term_masks_never_expire_and_the_public_never_beats_the_free_plan() -> None:
    forever = T0 + timedelta(days=365 * 50)
    assert public_grant([replace(FREE, reveal_after=None), PREMIUM], "spikes").hidden_at(SPIKE, forever)
    assert public_grant([PREMIUM], "spikes").hidden_at(SPIKE, forever) == frozenset({"*"})  # no free plan
    two = [FREE, replace(FREE, id="lite", reveal_after=timedelta(days=7)), PREMIUM]
    public = public_grant(two, "spikes")
    assert public.hidden_at(SPIKE, T0 + timedelta(days=6))  # the longest free term rules
    assert public.hidden_at(SPIKE, T0 + timedelta(days=7)) == frozenset()


def test_the_reveal_term_is_a_plan_setting() -> None:
    plan = PlanConfig(id="free", masked_fields=NUMBERS, reveal_after="24h").to_plan(1)
    assert plan.reveal_after == timedelta(hours=24)
    assert PlanConfig(id="free").to_plan(1).reveal_after is None


def _world(db: Database) -> World:
    plans = [
        PlanConfig(
            id="free",
            delay="15m",
            watchlist=2,
            masked_fields=NUMBERS,
            reveal_after="1h",
            channels=["web", "api"],  # the API is a plan term: these plans read it (h-apiaccess)
            rate_per_second=50,
            burst=100,
        ),
        PlanConfig(id="premium", price=2900, channels=["web", "email", "api"], rate_per_second=50, burst=100),
        PlanConfig(id="pro", price=9900, channels=["web", "api"], api_quota=1000, rate_per_second=50, burst=100),
    ]
    return World(db, plans=plans)


def _aged(world: World, minutes: float, key: str = "AAPL") -> Signal:
    """The stored 'spikes' signal on ``key`` made ``minutes`` before the world's now."""
    for s in world.signals:
        if (
            s.automation == "spikes"
            and s.key == key
            and abs(world.now - s.time - timedelta(minutes=minutes)) < timedelta(seconds=1)
        ):
            return s
    raise LookupError(minutes)


def test_old_history_is_whole_and_recent_signals_are_veiled_with_an_upgrade(db: Database) -> None:
    world = _world(db)
    old, recent = _aged(world, 120), _aged(world, 16)
    for who in (None, "free"):
        shown = world.get(f"/api/v1/signals/{old.id}", who).json()
        assert shown["payload"]["volume"] == old.payload["volume"] and shown["masked"] == []
        hidden = world.get(f"/api/v1/signals/{recent.id}", who).json()
        assert not set(hidden["payload"]) & set(NUMBERS) and hidden["score"] is None

    page = world.get(f"/signals/{recent.id}").text
    assert "AAPL: unusual volume at" in page and "traded —" not in page
    assert "Premium sees the numbers now" in page and "revealed here on" in page
    assert "data-upgrade" in page and "See it with Premium" in page
    for value in recent.payload.values():
        assert f"{value:,.0f}" not in page or value < 1000  # no volume figure
    assert "123,4" not in page

    whole = world.get(f"/signals/{old.id}").text
    assert "AAPL traded 7.5× its usual volume" in whole
    assert "data-upgrade" not in whole and "🔒" not in whole.split("More AAPL signals")[0]


def test_the_automation_page_announces_delayed_signals_without_key_or_numbers(db: Database) -> None:
    world = _world(db)
    html = world.get("/automations/spikes").text
    teasers = html.split('<ul class="teasers"')[1].split("</ul>")[0]
    assert teasers.count('class="teaser"') == 6  # 3 keys fired 3 seconds and 5 minutes ago
    assert "A new Spikes signal fired at" in teasers and "Premium has it now" in teasers
    shown = re.sub(r'data-release="[^"]*"', "", teasers)  # when it is released: a timestamp, digits by chance
    for word in ("AAPL", "MSFT", "IBM", "123", "7.5", "/signals/"):
        assert word not in shown
    rows = html.split("<tbody data-feed>")[1].split("</tbody>")[0]
    assert "veil-cell" in rows and "Premium sees the numbers now" in rows  # 16 min old: released, still masked


def test_public_stream_announces_a_new_signal_without_key_or_numbers(db: Database, live_server: Any) -> None:
    world = _world(db)
    with (
        live_server(world.app) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/api/v1/stream", params={"automation": "spikes"}) as response,
    ):
        fresh = Signal("spikes", "ZZQX", datetime.now(UTC), "volume_spike", 8.25, {"volume": 987654.0, "ratio": 31.5})
        (stored,) = db.write_sync(append_signals, "spikes", [fresh], datetime.now(UTC))
        (event,) = _read_events(response, 1)
    assert event["event"] == "teaser" and "id" not in event
    for secret in ("ZZQX", "987654", "31.5", "8.25", stored.hash, f"/signals/{stored.id}"):
        assert secret not in event["data"]
    body = json.loads(event["data"])
    assert set(body) == {"automation", "title", "kind", "fired_at", "release_at", "plan", "plan_id"}
    assert body["plan"] == "Premium"
    release = datetime.fromisoformat(body["release_at"].replace("Z", "+00:00"))
    assert release == stored.time + timedelta(minutes=15)


def test_a_subscriber_who_gets_everything_at_once_gets_no_teasers(db: Database, live_server: Any) -> None:
    world = _world(db)
    headers = {"Authorization": f"Bearer {world.keys['premium']}"}
    with (
        live_server(world.app) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/api/v1/stream", params={"automation": "spikes"}, headers=headers) as response,
    ):
        fresh = Signal("spikes", "ZZQX", datetime.now(UTC), "volume_spike", 8.25, {"volume": 987654.0})
        (stored,) = db.write_sync(append_signals, "spikes", [fresh], datetime.now(UTC))
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in response.iter_lines():  # every event up to the new signal
            if line:
                field, _, value = line.partition(":")
                current[field] = value.lstrip(" ")
                continue
            if "data" in current:
                events.append(current)
                if current.get("id") == str(stored.id):
                    break
            current = {}
    assert all(e["event"] == "signal" for e in events)  # no teaser before (or instead of) the signal
