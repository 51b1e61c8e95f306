"""The SVG charts: well-formed, accessible, honest about gaps and empty input."""

# The multiplication sign and sigma are the units the pages show, on purpose:
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from signalmint.web import charts
from signalmint.web.charts import price_chart, sparkline, volume_chart

SVG = "{http://www.w3.org/2000/svg}"


def days(n: int, start: str = "2013-01-01") -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(1, "D")


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("viewBox")
    assert root.find(f"{SVG}title") is not None
    return root


def first_point(path: ET.Element) -> tuple[float, float]:
    match = re.match(r"M(-?[\d.]+) (-?[\d.]+)", path.get("d", ""))
    assert match, path.get("d")
    return float(match[1]), float(match[2])


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [el for el in root.iter() if cls in (el.get("class") or "").split()]


@pytest.fixture
def series() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 60
    volume = np.full(n, 1_000_000.0) + np.arange(n) * 1000.0
    volume[45] = 9_000_000.0
    baseline = np.full(n, np.nan)
    baseline[30:] = 1_030_000.0
    return days(n), volume, baseline


def test_volume_chart_marks_the_spike_bar(series: tuple[np.ndarray, ...]) -> None:
    times, volume, baseline = series
    root = parse(volume_chart(times, volume, baseline, 45, ratio_line=3.0))
    bars = by_class(root, "bar")
    spikes = by_class(root, "bar-hl")
    assert len(bars) == 60
    assert len(spikes) == 1
    spike = spikes[0]
    others = [b for b in bars if b is not spike]
    assert spike.get("fill") != others[0].get("fill")
    # the spike is the tallest bar, and sits at the 46th position from the left
    assert float(spike.get("height", 0)) > max(float(b.get("height", 0)) for b in others)
    xs = sorted(float(b.get("x", 0)) for b in bars)
    assert xs.index(float(spike.get("x", 0))) == 45
    labels = by_class(root, "hl-label")
    assert [t.text for t in labels] == ["8.7×"]


def test_volume_chart_draws_baseline_and_threshold_only_where_known(
    series: tuple[np.ndarray, ...],
) -> None:
    times, volume, baseline = series
    root = parse(volume_chart(times, volume, baseline, 45, ratio_line=3.0))
    (base,) = by_class(root, "baseline")
    (threshold,) = by_class(root, "threshold")
    d = base.get("d", "")
    assert d.startswith("M") and d.count("M") == 1  # one unbroken run from bar 30 on
    assert d.count("L") == 29
    assert threshold.get("stroke-dasharray")
    # threshold = 3 × baseline, so it is drawn above the baseline (smaller y)
    assert first_point(threshold)[0] == first_point(base)[0]
    assert first_point(threshold)[1] < first_point(base)[1]


def test_volume_chart_without_ratio_line_has_no_threshold(series: tuple[np.ndarray, ...]) -> None:
    times, volume, baseline = series
    root = parse(volume_chart(times, volume, baseline, None))
    assert by_class(root, "threshold") == []
    assert by_class(root, "bar-hl") == []
    assert by_class(root, "hl-label") == []


def test_volume_chart_leaves_gaps_for_nan_and_breaks_the_baseline() -> None:
    volume = np.array([1.0, np.nan, 3.0, 0.0, 5.0, np.inf])
    baseline = np.array([1.0, 1.0, np.nan, 2.0, 2.0, 2.0])
    root = parse(volume_chart(days(6), volume, baseline, 1))
    assert len(by_class(root, "bar")) == 3  # NaN, zero and inf bars are not drawn
    assert by_class(root, "bar-hl") == []  # the highlighted bar has no volume to draw
    (base,) = by_class(root, "baseline")
    assert base.get("d", "").count("M") == 2  # broken at the NaN
    for el in root.iter():
        for value in el.attrib.values():
            assert "nan" not in value.lower() and "inf" not in value.lower()


@pytest.mark.parametrize(
    "volume, baseline",
    [
        (np.array([]), np.array([])),
        (np.array([np.nan, np.nan]), np.array([np.nan, np.nan])),
    ],
)
def test_volume_chart_without_data_says_so(volume: np.ndarray, baseline: np.ndarray) -> None:
    root = parse(volume_chart(days(len(volume)), volume, baseline, 0))
    assert "is-empty" in (root.get("class") or "")
    assert "No data" in "".join(root.itertext())
    assert by_class(root, "bar") == []


def test_volume_chart_one_bar_and_all_zero() -> None:
    one = parse(volume_chart(days(1), np.array([5.0]), np.array([np.nan]), 0))
    (bar,) = by_class(one, "bar-hl")
    assert 0 < float(bar.get("width", 0)) <= 40
    assert by_class(one, "hl-label")[0].text == "5"  # no baseline: show the volume itself
    zeros = parse(volume_chart(days(3), np.zeros(3), np.zeros(3), None))
    assert by_class(zeros, "bar") == []
    assert by_class(zeros, "baseline")


def test_volume_chart_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        volume_chart(days(3), np.ones(3), np.ones(2), None)


def test_out_of_range_highlight_is_ignored(series: tuple[np.ndarray, ...]) -> None:
    times, volume, baseline = series
    for bad in (-1, 60, 1000):
        assert by_class(parse(volume_chart(times, volume, baseline, bad)), "bar-hl") == []


def test_text_is_escaped() -> None:
    title = '<script>alert("x")</script> & co'
    svg = volume_chart(days(3), np.ones(3), np.ones(3), 1, title=title)
    assert "<script>" not in svg
    root = parse(svg)
    found = root.find(f"{SVG}title")
    assert found is not None and found.text == title
    assert root.get("aria-label") == title
    assert "<script>" not in price_chart(days(3), np.ones(3), None, title=title)
    assert "<script>" not in sparkline(np.ones(3), title=title)


def test_x_axis_labels_follow_the_span() -> None:
    daily = parse(volume_chart(days(60), np.ones(60), np.ones(60), None))
    assert "Jan 1" in [t.text for t in by_class(daily, "axis")]
    yearly = parse(price_chart(days(1000), np.linspace(1, 2, 1000), None))
    assert any((t.text or "").endswith("2013") for t in by_class(yearly, "axis"))
    hourly_times = np.datetime64("2024-05-01T09:00", "ns") + np.arange(8) * np.timedelta64(1, "h")
    hourly = parse(price_chart(hourly_times, np.arange(8.0), None))
    assert "09:00" in [t.text for t in by_class(hourly, "axis")]


def test_price_chart_marks_the_highlight() -> None:
    close = np.array([10.0, 10.5, np.nan, 11.0, 12.5])
    root = parse(price_chart(days(5), close, 4))
    (line,) = by_class(root, "price")
    assert line.get("d", "").count("M") == 2  # gap at the NaN
    assert len(by_class(root, "price-area")) == 2
    assert len(by_class(root, "hl-dot")) == 1
    assert len(by_class(root, "hl-rule")) == 1
    assert "is-empty" in (parse(price_chart(days(0), np.array([]), None)).get("class") or "")


def test_price_chart_flat_series_has_a_range() -> None:
    root = parse(price_chart(days(4), np.full(4, 100.0), 2))
    ys = {round(float(t.get("y", 0))) for t in by_class(root, "axis") if t.get("text-anchor") == "end"}
    assert len(ys) >= 2


def test_sparkline() -> None:
    root = parse(sparkline(np.array([1.0, 4.0, 2.0, np.nan, 3.0])))
    (line,) = by_class(root, "spark")
    assert line.get("d", "").count("M") == 2
    assert by_class(root, "spark-area") == []  # no area across a gap
    (dot,) = by_class(root, "spark-dot")
    assert float(dot.get("cx", 0)) == pytest.approx(117.0)
    assert root.get("width") == "120"
    flat = parse(sparkline(np.full(3, 2.0)))
    assert {c.get("cy") for c in by_class(flat, "spark-dot")} == {"14"}
    for empty in (np.array([]), np.array([np.nan])):
        assert "is-empty" in (parse(sparkline(empty)).get("class") or "")
    single = parse(sparkline(np.array([7.0])))
    assert by_class(single, "spark-dot")


def test_metric_chart_starts_at_zero_for_non_negative_figures() -> None:
    t = np.arange(4).astype("datetime64[D]").astype("datetime64[ns]")
    svg = charts.metric_chart(t, [2900.0, 2900.0, 2900.0, 2900.0], title="MRR (USD)", unit=lambda v: f"${v:,.0f}")
    labels = re.findall(r'dominant-baseline="middle"[^>]*>([^<]+)</text>', svg)
    assert labels[0] == "$0" and not any("-" in label for label in labels), labels
    assert re.search(r'<text class="chart-title"[^>]*>MRR \(USD\)</text>', svg)
    negative = charts.metric_chart(t, [-5.0, 3.0, 2.0, 1.0], title="Net")
    assert re.findall(r'dominant-baseline="middle"[^>]*>([^<]+)</text>', negative)[0].startswith("-")


def test_metric_chart_counts_have_whole_ticks() -> None:
    t = np.arange(2).astype("datetime64[D]").astype("datetime64[ns]")
    svg = charts.metric_chart(t, [1.0, 1.0], title="Paying", bars=True, whole=True)
    labels = re.findall(r'dominant-baseline="middle"[^>]*>([^<]+)</text>', svg)
    assert labels == ["0", "1", "2", "3", "4"], labels
