"""Rendering signals for people: subject, text, email-safe HTML and the chart PNG."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from signalmint.delivery import render
from signalmint.delivery.render import CHART_CID, chart_png, group_text, signal_text

BASE = "https://sm.example"
SPIKE_RGB = (0xF7, 0x6B, 0x15)


def _doc(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": 42,
        "automation": "volume",
        "seq": 7,
        "key": "AAPL",
        "time": "2013-02-27T21:00:00Z",
        "kind": "volume_spike",
        "score": 12.31,
        "payload": {
            "volume": 12.3e6,
            "baseline": 1.66e6,
            "ratio": 7.43,
            "z": 12.31,
            "mad": 2e5,
            "history": 20.0,
            "price_change": 0.0123,
        },
        "hash": "ab" * 32,
        "prev_hash": "cd" * 32,
        "url": "/signals/42",
        "masked": [],
    }
    doc.update(kw)
    return doc


def _masked_doc() -> dict[str, Any]:
    """What access.masked_json gives a free plan hiding volume, baseline and the score."""
    return _doc(payload={"ratio": 7.43, "price_change": 0.0123, "mad": 2e5, "history": 20.0}, score=None, hash=None,
                prev_hash=None, masked=["baseline", "score", "volume", "z"])  # fmt: skip


# --- signal_text --------------------------------------------------------------------------------


def test_subject_and_numbers_are_formatted() -> None:
    subject, text, html = signal_text(_doc(), "Unusual volume", base_url=BASE)
    assert subject == "AAPL traded 7.4× its usual volume"
    assert text.startswith(subject + "\n")
    for shown in ("7.4×", "12.3M", "1.66M", "12.3σ", "+1.23%", "2013-02-27 21:00 UTC", "Unusual volume"):
        assert shown in text and shown in html
    assert "200,000" not in text and "Mad" not in text  # detector bookkeeping stays out
    assert f"{BASE}/signals/42" in text and f'href="{BASE}/signals/42"' in html


def test_masked_fields_say_upgrade_not_zero() -> None:
    subject, text, html = signal_text(_masked_doc(), "Unusual volume", base_url=BASE)
    assert subject == "AAPL traded 7.4× its usual volume"
    rows = {line[:30].strip(): line[30:].strip() for line in text.splitlines() if line.startswith(("Volume", "Usual",
            "Robust", "Multiple", "Price"))}  # fmt: skip
    assert rows == {"Multiple of usual volume": "7.4×", "Volume": "upgrade to see",
                    "Usual volume (rolling median)": "upgrade to see", "Robust z-score": "upgrade to see",
                    "Price change": "+1.23%"}  # fmt: skip
    assert f"{BASE}/automations/volume#pricing" in text
    assert html.count("upgrade to see") == 3 and f'href="{BASE}/automations/volume#pricing"' in html
    assert not re.search(r">\s*0\s*<", html) and "12.3M" not in html


def test_a_hidden_multiple_changes_the_headline() -> None:
    doc = _doc(payload={"volume": 5e6}, masked=["ratio"])
    subject, text, _ = signal_text(doc, "Unusual volume", base_url=BASE, upgrade_url="https://sm.example/pricing")
    assert subject == "AAPL: unusual volume"
    assert "Multiple of usual volume" in text and "https://sm.example/pricing" in text


@settings(max_examples=150, deadline=None)
@given(
    url=st.text(min_size=1, max_size=40),
    key=st.sampled_from(["AAPL", "A&B", "<x>", "\x00unsubscribe-link\x00"]),
    masked=st.booleans(),
    chart=st.booleans(),
)
def test_each_subscriber_gets_what_rendering_for_them_alone_gives(
    url: str, key: str, masked: bool, chart: bool
) -> None:
    """A view is rendered once and each subscriber's unsubscribe link spliced in: the same text."""
    doc = _doc(key=key, masked=["volume"] if masked else [])
    got = signal_text(doc, "Spikes & co", base_url=BASE, unsubscribe_url=url, chart=chart)
    assert got == render._signal_text(doc, "Spikes & co", BASE, url, None, chart)
    assert signal_text(doc, "Spikes & co", base_url=BASE, unsubscribe_url=url, chart=chart) == got  # from the template
    docs = [doc, _doc(id=43, key="MSFT")]
    assert group_text(docs, "Spikes", base_url=BASE, unsubscribe_url=url) == render._group_text(
        docs, "Spikes", BASE, url, None
    )
    changed = _doc(key=key, masked=["volume"] if masked else [], time="2014-05-06T07:08:00Z")  # another view
    assert signal_text(changed, "Spikes & co", base_url=BASE, unsubscribe_url=url, chart=chart) == render._signal_text(
        changed, "Spikes & co", BASE, url, None, chart
    )


def test_unsubscribe_footer_only_when_given() -> None:
    _, text, html = signal_text(_doc(), "Unusual volume", base_url=BASE, unsubscribe_url=f"{BASE}/unsubscribe/1/tok")
    assert f"Unsubscribe: {BASE}/unsubscribe/1/tok" in text
    assert f'href="{BASE}/unsubscribe/1/tok"' in html and ">Unsubscribe<" in html
    _, text, html = signal_text(_doc(), "Unusual volume", base_url=BASE)
    assert "Unsubscribe" not in text and "Unsubscribe" not in html
    assert "because you subscribed to Unusual volume" in text


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]
        if tag not in ("meta", "img", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes {self.open[-1:] or 'nothing'}"


@pytest.mark.parametrize("chart", [False, True])
def test_html_is_email_safe_and_well_formed(chart: bool) -> None:
    _, _, html = signal_text(_doc(), "Unusual volume", base_url=BASE, unsubscribe_url=f"{BASE}/u", chart=chart)
    parser = _Tags()
    parser.feed(html)
    assert parser.open == []  # every element closed, in order
    assert not {"style", "script", "link", "iframe", "form"} & set(parser.tags)
    assert "class" not in parser.attrs  # styles are inline: many clients drop <style> blocks
    assert html.startswith("<!DOCTYPE html>") and 'charset="utf-8"' in html
    assert (f'src="cid:{CHART_CID}"' in html) is chart


def test_everything_from_the_signal_is_escaped() -> None:
    doc = _doc(key="<script>x</script>", payload={"ratio": 5.0, "note<b>": 1.0})
    subject, _, html = signal_text(doc, "A & B <alerts>", base_url=BASE)
    assert "<script>" not in html and "&lt;script&gt;" in html and "A &amp; B &lt;alerts&gt;" in html
    assert "<b>" not in html and subject == "<script>x</script> traded 5.0× its usual volume"


def test_missing_and_odd_values_do_not_crash() -> None:
    subject, text, _ = signal_text({"key": "X", "payload": {"ratio": None}}, "T", base_url=BASE)
    assert subject == "X: signal" and "—" in text
    subject, _, _ = signal_text(_doc(payload={"ratio": float("nan")}), "T", base_url=BASE)
    assert subject == "AAPL: unusual volume"


# --- group_text ---------------------------------------------------------------------------------


def test_group_names_the_first_few_and_lists_all() -> None:
    ratios = [("AAPL", 7.4), ("MSFT", 5.06), ("TSLA", 4.0), ("NVDA", 3.2), ("AMD", 3.0)]
    docs = [_doc(id=i, key=k, url=f"/signals/{i}", payload={"ratio": r}) for i, (k, r) in enumerate(ratios, start=1)]
    docs[1] = _doc(id=2, key="MSFT", url="/signals/2", payload={}, masked=["ratio"])
    subject, text, html = group_text(docs, "Unusual volume", base_url=BASE, unsubscribe_url=f"{BASE}/u")
    assert subject == "5 alerts: AAPL 7.4×, MSFT, TSLA 4.0× and 2 more"
    for i, key in enumerate(["AAPL", "MSFT", "TSLA", "NVDA", "AMD"], start=1):
        assert f"{BASE}/signals/{i}" in text and f'href="{BASE}/signals/{i}"' in html and key in html
    assert "MSFT: unusual volume (multiple: upgrade to see)" in text
    assert "upgrade to see" in html and f"Unsubscribe: {BASE}/u" in text
    parser = _Tags()
    parser.feed(html)
    assert parser.open == [] and "class" not in parser.attrs


def test_a_group_of_one_is_a_single_alert() -> None:
    assert group_text([_doc()], "Unusual volume", base_url=BASE) == signal_text(_doc(), "Unusual volume", base_url=BASE)


# --- chart_png ----------------------------------------------------------------------------------


def _series(n: int, spike_at: int, seed: int = 1) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    times = (np.datetime64("2024-01-02T14:30") + np.arange(n) * np.timedelta64(1, "m")).astype("datetime64[ns]")
    volume = rng.lognormal(13, 0.35, n)
    baseline = np.full(n, float(np.median(volume)))
    baseline[:10] = np.nan
    volume[spike_at] = 7.4 * baseline[spike_at]
    return times, volume, baseline


def _image(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert("RGB")


def _near(color: Any, target: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, target, strict=True))


def test_chart_is_a_small_png_with_the_spike_in_the_accent_colour() -> None:
    times, volume, baseline = _series(120, spike_at=100)
    png = chart_png(times, volume, baseline, 100)
    image = _image(png)
    assert image.size == (720, 260) and len(png) < 60_000
    width, height = image.size
    spike_columns = {
        x for x in range(width) for y in range(40, height - 30) if _near(image.getpixel((x, y)), SPIKE_RGB)
    }
    assert spike_columns and all(560 <= x <= 620 for x in spike_columns)  # bar 100 of 120 sits at ~x=605
    teal = sum(1 for x in range(width) for y in range(height) if _near(image.getpixel((x, y)), (0x0D, 0x94, 0x88)))
    assert teal > 500  # the baseline is drawn


def test_chart_without_highlight_has_no_accent() -> None:
    times, volume, baseline = _series(60, spike_at=50)
    image = _image(chart_png(times, volume, baseline, None, width=400, height=200))
    assert image.size == (400, 200)
    assert not any(_near(image.getpixel((x, y)), SPIKE_RGB, 12) for x in range(400) for y in range(200))


def test_chart_stays_small_for_many_noisy_bars() -> None:
    times, volume, baseline = _series(3000, spike_at=2999, seed=3)
    volume[::7] = np.nan
    png = chart_png(times, volume, baseline, 2999)
    assert len(png) < 60_000 and _image(png).size == (720, 260)


def test_chart_takes_datetimes_and_handles_empty_and_bad_input() -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    days = [start + timedelta(days=i) for i in range(5)]
    assert _image(chart_png(days, [1, 2, 3, 9, 2], [1, 1, 1, 1, 1], 3)).size == (720, 260)
    empty = _image(chart_png([], [], [], None))
    assert empty.size == (720, 260)
    all_nan = chart_png(days, [np.nan] * 5, [np.nan] * 5, 2)
    assert _image(all_nan).size == (720, 260)
    with pytest.raises(ValueError):
        chart_png(days, [1, 2, 3], [1, 1, 1, 1, 1], None)
