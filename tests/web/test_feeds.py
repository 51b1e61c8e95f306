"""The private feeds, read by a real feed parser: readable entries, RSS and Atom alike, masks kept."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import feedparser  # type: ignore[import-untyped]
import numpy as np
import pytest

from signalmint.config import PlanConfig
from signalmint.records import Frame
from signalmint.store import Database
from signalmint.store.bars import insert_bars

from .test_access_api import NUMBERS, World
from .test_reveal import _aged

CHANNELS = ["web", "email", "rss"]


def _world(db: Database) -> World:
    plans = [
        PlanConfig(id="free", delay="15m", watchlist=2, channels=CHANNELS, masked_fields=NUMBERS, reveal_after="1h",
                   rate_per_second=50, burst=100),
        PlanConfig(id="premium", price=2900, channels=CHANNELS, rate_per_second=50, burst=100),
        PlanConfig(id="pro", price=9900, channels=["web", "api", "rss"], api_quota=1000, rate_per_second=50, burst=100),
    ]  # fmt: skip
    return World(db, plans=plans)


def _feeds(world: World, who: str) -> dict[str, Any]:
    urls = world.get("/api/v1/me/feed", who).json()
    out = {}
    for kind, url in (("atom", urls["url"]), ("rss", urls["rss_url"])):
        response = world.client.get(url.split("8000", 1)[-1] if "8000" in url else re.sub(r"^https?://[^/]+", "", url))
        assert response.status_code == 200, response.text
        expected = "application/atom+xml" if kind == "atom" else "application/rss+xml"
        assert response.headers["content-type"].startswith(expected)
        out[kind] = (response.text, feedparser.parse(response.text))
    return out


def _numbers(value: float) -> list[str]:
    """How a masked number could show up in text."""
    return [f"{value:,.0f}", f"{value:.0f}", repr(value)]


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_free_feed_parses_reads_as_words_and_hides_the_numbers(db: Database, kind: str) -> None:
    world = _world(db)
    raw, feed = _feeds(world, "free")[kind]
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == ("atom10" if kind == "atom" else "rss20")
    recent, old = _aged(world, 16), _aged(world, 120)  # masked still, and revealed (reveal_after 1h)
    by_link = {e.link: e for e in feed.entries}
    assert {e.link.rsplit("/", 1)[1] for e in feed.entries} == {
        str(s.id) for s in world.signals if s.key in {"AAPL", "MSFT"}
        and world.now - s.time >= timedelta(minutes=15)
    }  # fmt: skip
    veiled = by_link[f"{world.ctx.settings.base_url.rstrip('/')}/signals/{recent.id}"]
    assert veiled.title == f"AAPL: unusual volume at {recent.time:%Y-%m-%d %H:%M} UTC"
    assert "Premium sees the numbers now" in veiled.summary and "revealed here on" in veiled.summary
    whole = by_link[f"{world.ctx.settings.base_url.rstrip('/')}/signals/{old.id}"]
    assert whole.title == "AAPL traded 7.5× its usual volume"
    assert "123,462" in whole.summary or "123,4" in whole.summary  # numbers once revealed
    for entry in feed.entries:
        assert not re.search(r"[{}]|'volume'|: \d+\.\d+,", entry.title + entry.summary)  # no dict reprs
        assert entry.title[:4] in {"AAPL", "MSFT"}
    for s in world.signals:  # a number still masked appears nowhere in the feed
        if world.now - s.time < timedelta(hours=1):
            assert not any(text in raw for text in _numbers(s.payload["volume"]))


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_premium_feed_has_the_numbers_a_link_and_the_chart(db: Database, kind: str) -> None:
    world = _world(db)
    fresh = _aged(world, 0.05, "IBM")
    start = np.datetime64(fresh.time.replace(tzinfo=None), "ns")
    times = start - np.arange(40, -1, -1).astype("timedelta64[m]")
    n = len(times)
    frame = Frame(
        keys=np.array(["IBM"] * n),
        times=times,
        columns={c: np.full(n, 100.0) for c in ("open", "high", "low", "close")}
        | {"volume": np.r_[np.full(n - 1, 1000.0), 9000.0]},
    )
    world.db.write_sync(insert_bars, "spikes", frame)
    _raw, feed = _feeds(world, "premium")[kind]
    assert not feed.bozo, feed.get("bozo_exception")
    (entry,) = [e for e in feed.entries if e.link.endswith(f"/signals/{fresh.id}")]
    assert entry.title == "IBM traded 7.5× its usual volume"
    html = entry.content[0].value if kind == "atom" else entry.description
    assert "123,456" in html and f'href="{entry.link}"' in html
    (chart,) = re.findall(r'<img[^>]* src="([^"]+)"', html)
    svg = world.client.get(re.sub(r"^https?://[^/]+", "", chart))
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    assert (
        world.client.get(
            re.sub(r"/feeds/(\d+)/[0-9a-f]+/", r"/feeds/\1/" + "0" * 40 + "/", re.sub(r"^https?://[^/]+", "", chart))
        ).status_code
        == 404
    )


def test_the_chart_of_a_masked_signal_is_not_served_to_a_free_feed(db: Database) -> None:
    world = _world(db)
    recent = _aged(world, 16)
    atom_url = world.get("/api/v1/me/feed", "free").json()["url"]
    path = re.sub(r"^https?://[^/]+", "", atom_url).removesuffix(".atom")
    assert world.client.get(f"{path}/signals/{recent.id}/chart.svg").status_code == 404
    raw = world.client.get(path + ".atom").text
    assert f"/signals/{recent.id}/chart.svg" not in raw
