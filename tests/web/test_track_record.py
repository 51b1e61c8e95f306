"""The public track record: hit rates, outcomes beside each signal, and no masked move leaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signalmint.formatting import fmt_pct
from signalmint.records import Automation, Outcome, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.outcomes import insert_outcomes

from .test_access_api import World
from .test_reveal import _aged, _world

REVEALED = 0.0421  # the move after the public's revealed signals (2 hits of 3)
MASKED = 0.0777  # the move after signals whose numbers the public does not see yet (all hits)


def _outcome(signal: Signal, horizon: int, ret: float, hit: bool) -> Outcome:
    assert signal.id is not None
    return Outcome(
        signal_id=signal.id, automation=signal.automation, key=signal.key, time=signal.time, horizon=horizon,
        end_time=signal.time + timedelta(minutes=horizon), entry=100.0, exit=100 * (1 + ret), ret=ret,
        volume=5000.0, baseline=0.01, samples=50, hit=hit,
    )  # fmt: skip


@pytest.fixture
def world(db: Database) -> World:
    world = _world(db)  # free plan (the public's view): 15 min late, numbers masked, revealed after 1 h
    rows = []
    for key, hit in (("AAPL", True), ("MSFT", True), ("IBM", False)):
        old = _aged(world, 120, key)  # revealed to the public
        recent = _aged(world, 16, key)  # released to the public, numbers still masked
        rows += [_outcome(old, 5, REVEALED, hit), _outcome(recent, 5, MASKED, True)]
        rows += [_outcome(old, 1, REVEALED / 2, hit)]
    db.write_sync(insert_outcomes, rows, datetime.now(UTC))
    return world


def test_the_public_sees_hit_rates_of_revealed_signals_only(world: World) -> None:
    page = world.get("/automations/spikes/track-record")
    assert page.status_code == 200
    html = page.text
    assert 'data-horizon="5"' in html and 'data-horizon="1"' in html
    assert "67%" in html and "2 of 3" in html  # AAPL and MSFT hit, IBM did not
    assert fmt_pct(REVEALED) in html
    # the masked signals are listed, their outcomes are not, and they do not count in the rates
    assert fmt_pct(MASKED) not in html and "83%" not in html and "5 of 6" not in html
    assert html.count("🔒 hidden") >= 3
    for key in ("AAPL", "MSFT", "IBM"):
        assert f'data-signal="{_aged(world, 16, key).id}"' in html
    assert f'data-signal="{_aged(world, 5).id}"' not in html  # not released to the public yet
    assert "<svg" in html and "data-outcome-chart" in html
    assert "signalmint verify --url http://testserver --automation spikes" in html
    assert "/api/v1/chain?automation=spikes" in html


def test_a_paying_viewer_sees_every_outcome(world: World) -> None:
    html = world.get("/automations/spikes/track-record", "premium").text
    assert fmt_pct(MASKED) in html and fmt_pct(REVEALED) in html
    assert "5 of 6" in html and "83%" in html  # the 5-bar rate over every measured signal
    assert "🔒 hidden" not in html


def test_the_chain_head_is_the_newest_signal_the_viewer_sees(world: World) -> None:
    released = world.now - timedelta(minutes=15)
    spikes = [s for s in world.signals if s.automation == "spikes"]
    newest_public = max((s for s in spikes if s.time <= released), key=lambda s: s.seq)
    html = world.get("/automations/spikes/track-record").text
    assert f"#{newest_public.seq}" in html and newest_public.hash in html  # scheme 2: public from the start
    newest = max(spikes, key=lambda s: s.seq)
    assert newest.hash in world.get("/automations/spikes/track-record", "premium").text


def test_the_signal_page_hides_the_outcome_until_the_move_is_revealed(world: World) -> None:
    masked, revealed = _aged(world, 16), _aged(world, 120)
    page = world.get(f"/signals/{masked.id}").text
    assert "What happened next" in page and fmt_pct(MASKED) not in page and "data-horizon" not in page
    assert fmt_pct(MASKED) in world.get(f"/signals/{masked.id}", "premium").text
    shown = world.get(f"/signals/{revealed.id}").text
    assert fmt_pct(REVEALED) in shown and 'data-horizon="1"' in shown and 'data-horizon="5"' in shown


def test_pages_and_bad_input(world: World) -> None:
    assert world.get("/automations/spikes/track-record?page=0").status_code == 422
    assert world.get("/automations/spikes/track-record?page=abc").status_code == 422
    assert world.get("/automations/nope/track-record").status_code == 404
    assert world.get("/automations/spikes/track-record?page=99").status_code == 200  # past the end: the last page
    assert 'href="/automations/spikes/track-record"' in world.get("/automations/spikes").text
    other = world.get("/automations/other/track-record").text  # signals, no outcome measured yet
    assert "No outcome measured yet" in other or "data-no-outcomes" in other


def test_the_public_sees_no_outcome_of_an_automation_whose_moves_stay_masked(db: Database) -> None:
    world = _world(db)
    signal = _aged(world, 16)
    db.write_sync(insert_outcomes, [_outcome(signal, 5, MASKED, True)], datetime.now(UTC))
    html = world.get("/automations/spikes/track-record").text
    assert fmt_pct(MASKED) not in html
    assert "data-hit-rate>" not in html and "data-summary" not in html
    assert "appear once the numbers are revealed" in html


def _as(world, kind: str, options: dict[str, object]) -> list[Signal]:  # type: ignore[no-untyped-def]
    """The 'other' automation re-described as a ``kind`` automation; its signals."""
    automations = [
        Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {}),
        Automation("other", "Kettle deals", "", "web_page", kind, options),
    ]
    world.db.write_sync(sync_automations, automations, world.now)
    return [s for s in world.signals if s.automation == "other"]


def test_a_shop_automation_shows_whether_its_drops_held_against_the_base_rate(world) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for i, signal in enumerate(_as(world, "price_drop", {"pct": 10})):
        assert signal.id is not None
        rows.append(
            Outcome(
                signal_id=signal.id, automation="other", key=signal.key, time=signal.time, horizon=3,
                end_time=signal.time + timedelta(hours=3), entry=40.0, exit=38.0 if i % 3 else 45.0,
                ret=-0.05 if i % 3 else 0.125, volume=1.0, baseline=0.4, samples=12, hit=bool(i % 3),
                measure="stays_down",
            )
        )  # fmt: skip
    world.db.write_sync(insert_outcomes, rows, datetime.now(UTC))
    html = world.get("/automations/other/track-record", "premium").text
    assert 'data-measure="stays_down"' in html and "the price stayed at or below the alerted price" in html
    assert "Hit rate · 3 observations" in html and "base rate: 40%" in html and "random bars" not in html
    hits = sum(o.hit for o in rows)
    assert f"{hits} of {len(rows)}" in html and html.count(">held</span>") == hits
    assert "By key" in html and fmt_pct(0.125) in html and "data-outcome-chart" in html
    api = world.get("/api/v1/automations/other/outcomes", "premium").json()
    assert api["measure"] == "stays_down" and api["no_outcome"] is None
    assert {o["measure"] for item in api["items"] for o in item["outcomes"]} == {"stays_down"}
    assert api["summary"][0]["baseline"] == 0.4
    page = world.get(f"/signals/{rows[1].signal_id}", "premium").text  # and on the signal's own page
    assert 'data-measure="stays_down"' in page and "Base rate" in page and "40%" in page and "Random bars" not in page


def test_a_kind_without_an_outcome_says_so_instead_of_an_empty_record(world) -> None:  # type: ignore[no-untyped-def]
    _as(world, "new_item", {"match": ["python"]})
    html = world.get("/automations/other/track-record", "premium").text
    assert "data-no-outcome-kind" in html and "No outcome is measured for new item signals" in html
    assert "news the moment it appears" in html and "No outcome measured yet" not in html
    assert "data-horizon" not in html and "signalmint verify" in html  # still the chain
    api = world.get("/api/v1/automations/other/outcomes", "premium").json()
    assert api["measure"] == "none" and "news" in api["no_outcome"] and api["summary"] == []
