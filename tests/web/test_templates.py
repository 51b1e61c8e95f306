"""The page templates, rendered with real records through the real filters.

Also the filters' edge cases beyond their doctests, and (when node is installed)
that live.js formats streamed signals exactly as the server renders them.
"""

# The multiplication sign and sigma are the units the pages show, on purpose:
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest

from signalmint import formatting as filters
from signalmint.records import Automation, Signal
from signalmint.web import charts
from signalmint.web.filters import register_filters
from signalmint.web.money import register_money_filters

WEB = Path(charts.__file__).parent
EVIL = "<script>alert(1)</script>"
T0 = datetime(2013, 2, 27, 21, 0, tzinfo=UTC)


class FakeRequest:
    base_url = "http://testserver/"


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB / "templates"),
        autoescape=True,
    )
    register_filters(environment)
    register_money_filters(environment)
    return environment


def automation(name: str = "us-stocks-volume", title: str = "US stocks: unusual volume") -> Automation:
    return Automation(
        name=name,
        title=title,
        description="Daily bars of large US stocks.",
        source_kind="bokeh_stocks",
        detector_kind="volume_spike",
        detector_options={"window": 30, "ratio": 3.0, "z": 4.0},
    )


def signal(key: str = "AAPL", id: int = 42, *, ratio: float = 7.43, change: float = -0.0123) -> Signal:
    return Signal(
        automation="us-stocks-volume",
        key=key,
        time=T0 - timedelta(days=42 - id),
        kind="volume_spike",
        score=ratio,
        payload={
            "volume": 1_520_000.0,
            "baseline": 204_576.0,
            "ratio": ratio,
            "z": 12.31,
            "mad": 30_000.0,
            "price_change": change,
            "history": [],
        },
        seq=id,
        prev_hash="a" * 64,
        hash="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        id=id,
    )


def render(env: jinja2.Environment, name: str, nav_active: str = "home", **context: Any) -> str:
    template = env.get_template(name)
    return template.render(site_title="signalmint", request=FakeRequest(), nav_active=nav_active, **context)


def home_context(sig: Signal, auto: Automation) -> dict[str, Any]:
    return {
        "automations": [
            {
                "automation": auto,
                "latest": [sig],
                "signal_count": 1234,
                "last_signal_at": sig.time,
                "keys": 506,
                "sparkline": charts.sparkline(np.array([3.0, 7.4, 4.0])),
            }
        ]
    }


def automation_context(signals: list[Signal], auto: Automation) -> dict[str, Any]:
    return {
        "automation": auto,
        "signals": signals,
        "stats": {
            "signals_total": 1234,
            "keys": 506,
            "last_signal_at": signals[0].time if signals else None,
            "detector": "volume_spike · W=30 · ratio≥3 · z≥4",
        },
        "stream_url": f"/api/v1/stream?automation={auto.name}",
    }


def signal_context(sig: Signal, *, charts_on: bool = True) -> dict[str, Any]:
    times = np.datetime64("2013-01-01", "ns") + np.arange(40) * np.timedelta64(1, "D")
    volume = np.full(40, 200_000.0)
    volume[35] = sig.payload.get("volume", 0.0)
    baseline = np.full(40, 204_576.0)
    return {
        "signal": sig,
        "automation": automation(),
        "volume_svg": charts.volume_chart(times, volume, baseline, 35, ratio_line=3.0) if charts_on else None,
        "price_svg": charts.price_chart(times, np.linspace(10, 12, 40), 35) if charts_on else None,
        "series_note": "Bars before Jan 1, 2013 were removed by the retention setting.",
        "recent_for_key": [signal(sig.key, 7, ratio=24.6)],
        "verify": {"hash": sig.hash, "prev_hash": sig.prev_hash, "seq": sig.seq},
    }


class Tags(HTMLParser):
    """Collects (tag, attrs) pairs so tests can look at markup structure."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


# ---------------------------------------------------------------- home


def test_home_shows_each_automation_and_its_latest_signals(env: jinja2.Environment) -> None:
    html = render(env, "home.html", **home_context(signal(), automation()))
    assert "US stocks: unusual volume" in html
    assert "AAPL" in html and "7.4×" in html and "12.3σ" in html
    assert 'href="/signals/42"' in html
    assert 'href="/automations/us-stocks-volume"' in html
    assert 'href="/docs"' in html and 'href="/status"' in html  # the status page; it links /healthz (JSON)
    assert "1,234" in html and "506" in html
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart sparkline"' in html  # not escaped
    assert 'aria-current="page">Automations' in html


def test_home_without_automations_or_signals(env: jinja2.Environment) -> None:
    assert "No automations are running yet" in render(env, "home.html", automations=[])
    ctx = home_context(signal(), automation())
    ctx["automations"][0].update(latest=[], last_signal_at=None, signal_count=0, sparkline="")
    html = render(env, "home.html", **ctx)
    assert "No signals yet" in html
    assert "Latest alerts" not in html


# ---------------------------------------------------------------- automation


def test_automation_page_is_a_live_feed(env: jinja2.Environment) -> None:
    signals = [signal("NVDA", 43, ratio=24.6, change=0.02), signal("AAPL", 42)]
    html = render(env, "automation.html", "automation", **automation_context(signals, automation()))
    found = tags(html)
    feed = [attrs for tag, attrs in found if "data-stream-url" in attrs]
    assert [f["data-stream-url"] for f in feed] == ["/api/v1/stream?automation=us-stocks-volume"]
    assert ("script", {"src": "/static/live.js", "defer": None}) in found
    rows = [attrs["data-id"] for tag, attrs in found if attrs.get("class") == "feed-row"]
    assert rows == ["43", "42", ""]  # newest first, then the empty row in <template>
    assert 'curl "http://testserver/api/v1/signals?automation=us-stocks-volume"' in html
    assert 'data-tier="4">24.6×' in html and 'data-dir="up">+2.00%' in html
    assert "volume_spike · W=30 · ratio≥3 · z≥4" in html
    assert 'data-state="connecting"' in html


def test_streamed_rows_share_the_server_row_markup(env: jinja2.Environment) -> None:
    html = render(env, "automation.html", **automation_context([signal()], automation()))
    body = html.split("<tbody data-feed>")[1].split("</tbody>")[0]
    template = html.split('<template id="feed-row">')[1].split("</template>")[0]

    def shape(fragment: str) -> list[tuple[str, str | None, str | None]]:
        return [(t, a.get("class"), a.get("data-f")) for t, a in tags(fragment)]

    assert shape(body) == shape(template)
    assert {a.get("data-f") for _, a in tags(template)} >= {
        "key", "time", "time-full", "time-date", "time-clock", "volume", "baseline", "ratio", "z",
        "price_change", "link",
    }  # fmt: skip
    assert "AAPL" not in template


def test_empty_feed_has_a_placeholder_row(env: jinja2.Environment) -> None:
    html = render(env, "automation.html", **automation_context([], automation()))
    assert "data-empty" in html and "No signals yet" in html
    assert "—" in html  # last signal unknown


# ---------------------------------------------------------------- signal


def test_signal_page(env: jinja2.Environment) -> None:
    html = render(env, "signal.html", "signal", **signal_context(signal()))
    assert "AAPL traded 7.4× its usual volume" in html
    assert "1.52M" in html and "204,576" in html and "12.3σ" in html
    assert 'data-dir="down">-1.23%' in html
    assert 'href="/api/v1/signals/42"' in html
    assert "9f86d08188" in html and "aaaaaaaaaa" in html and "#42" in html
    assert html.count('class="chart chart-volume"') == 1
    assert html.count('class="chart chart-price"') == 1
    assert "removed by the retention setting" in html
    assert 'href="/signals/7"' in html and "24.6×" in html
    assert 'href="/automations/us-stocks-volume"' in html


def test_signal_page_without_charts_or_ratio(env: jinja2.Environment) -> None:
    sig = signal()
    other = Signal(
        automation=sig.automation, key="BTC", time=sig.time, kind="price_gap", score=1.0,
        payload={}, seq=1, id=5,
    )  # fmt: skip
    ctx = signal_context(other, charts_on=False)
    ctx.update(recent_for_key=[], series_note=None, verify={"hash": "", "prev_hash": "", "seq": 1})
    html = render(env, "signal.html", **ctx)
    assert "BTC: price gap" in html
    assert "<svg" not in html.split("<main")[1].split("</main>")[0].split('class="crumbs"')[1]
    assert "none (first signal)" in html
    assert "only BTC signal" in html


# ---------------------------------------------------------------- error


def test_error_page(env: jinja2.Environment) -> None:
    html = render(env, "error.html", status=404, message="There is no signal #123.")
    assert "404" in html and "There is no signal #123." in html
    assert "We could not find that page" in html
    assert "Something went wrong" in render(env, "error.html", status=418, message="x")


# ---------------------------------------------------------------- escaping


def test_untrusted_text_is_escaped_everywhere(env: jinja2.Environment) -> None:
    bad = signal(EVIL)
    auto = automation(name='evil"name', title=EVIL)
    pages = [
        render(env, "home.html", **home_context(bad, auto)),
        render(env, "automation.html", **automation_context([bad], auto)),
        render(env, "signal.html", **{**signal_context(bad), "automation": auto}),
        render(env, "error.html", status=400, message=EVIL),
    ]
    for html in pages:
        assert EVIL not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script>alert" not in html
    assert 'href="/automations/evil%22name"' in pages[0]


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.float64(1_520_000), "1.52M"),
        (np.int64(1234), "1,234"),
        (True, "—"),
        ("12.5", "12.5"),
        ("n/a", "—"),
        (jinja2.Undefined(), "—"),
        (-0.001, "0"),
        (999.999, "1,000"),
        (999_999.6, "1M"),
        (999.6e6, "1B"),
        (-1_520_000, "-1.52M"),
    ],
)
def test_fmt_num_edges(value: Any, expected: str) -> None:
    assert filters.fmt_num(value) == expected


def test_time_filters_edges() -> None:
    naive = datetime(2013, 2, 27, 21, 0)
    eastern = datetime(2013, 2, 27, 16, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert filters.fmt_time(naive) == "2013-02-27 21:00 UTC"
    assert filters.fmt_time(eastern) == "2013-02-27 21:00 UTC"
    assert filters.fmt_iso(eastern) == "2013-02-27T21:00:00Z"
    assert filters.fmt_time(jinja2.Undefined()) == "—"
    assert filters.fmt_ago(T0, T0 + timedelta(hours=1)) == "1 h ago"
    assert filters.fmt_ago(T0, T0 + timedelta(days=1)) == "1 day ago"
    assert filters.fmt_ago(T0, T0 + timedelta(days=45)) == "1 month ago"
    assert filters.fmt_ago(naive, T0 + timedelta(minutes=90)) == "1 h ago"
    assert filters.fmt_ago(datetime.now(UTC) - timedelta(minutes=5)) == "5 min ago"


def test_number_filters_edges() -> None:
    assert filters.fmt_ratio(float("nan")) == "—"
    assert filters.fmt_z(-math.inf) == "-∞σ"
    assert filters.fmt_pct(math.inf) == "—"
    assert filters.fmt_pct(-0.00001) == "0.00%"
    assert filters.ratio_tier(math.inf) == 4
    assert filters.direction(math.nan) == "flat"
    assert filters.short_hash("abc", 6) == "abc"


def test_register_filters_installs_every_filter() -> None:
    environment = jinja2.Environment(autoescape=True)
    register_filters(environment)
    register_money_filters(environment)
    not_filters = {"DASH", "TEXT_LIMIT", "minor_digits", "parse_minor", "parse_money"}  # constants and parsers
    for name in filters.__all__:
        if name not in not_filters:
            assert environment.filters[name] is getattr(filters, name)
    out = environment.from_string("{{ v | fmt_ratio }} {{ none | fmt_time }}").render(v=3)
    assert out == "3.0× —"


# ---------------------------------------------------------------- live.js parity


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_live_js_formats_like_the_filters() -> None:
    numbers = [0, 7, 12.5, 999.999, 1234, 999_999, 999_999.6, 1_520_000, 150e6, 999.6e6, 3.2e9, -4.5e12, None]
    ratios = [3, 7.43, 99.96, 240.6, None]
    changes = [0.0123, -0.05, 0, -0.00001, 0.00004, None]
    times = ["2013-02-07T09:30:00Z", "2024-12-31T23:59:59Z"]
    script = f"""
      const f = require({json.dumps(str(WEB / "static" / "live.js"))});
      const out = {{
        num: {json.dumps(numbers)}.map(f.fmtNum),
        ratio: {json.dumps(ratios)}.map(f.fmtRatio), tier: {json.dumps(ratios)}.map(f.ratioTier),
        z: {json.dumps(ratios)}.map(f.fmtZ),
        pct: {json.dumps(changes)}.map(f.fmtPct), dir: {json.dumps(changes)}.map(f.direction),
        time: {json.dumps(times)}.map(f.fmtTime),
        iso: {json.dumps(times)}.map(f.isoZ),
      }};
      console.log(JSON.stringify(out));
    """
    assert NODE is not None
    result = subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True, timeout=30)
    js = json.loads(result.stdout)
    moments = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times]
    assert js["num"] == [filters.fmt_num(v) for v in numbers]
    assert js["ratio"] == [filters.fmt_ratio(v) for v in ratios]
    assert js["tier"] == [filters.ratio_tier(v) for v in ratios]
    assert js["z"] == [filters.fmt_z(v) for v in ratios]
    assert js["pct"] == [filters.fmt_pct(v) for v in changes]
    assert js["dir"] == [filters.direction(v) for v in changes]
    assert js["time"] == [filters.fmt_time(m) for m in moments]
    assert js["iso"] == [filters.fmt_iso(m) for m in moments]


def test_live_js_never_uses_inner_html() -> None:
    source = (WEB / "static" / "live.js").read_text()
    code = "\n".join(line for line in source.splitlines() if not line.strip().startswith("//"))
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", code)
    assert "textContent" in code
