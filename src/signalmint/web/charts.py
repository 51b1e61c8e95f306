"""Server-side SVG charts: numpy arrays in, standalone SVG markup out.

Pure functions, no JavaScript. Each chart is a complete ``<svg role="img">``
with a ``<title>`` and ``<desc>``, a ``viewBox`` so CSS can scale it to its
container, and presentation attributes for its colours so it also reads well
on its own; ``app.css`` restyles the classes (``bar``, ``bar-hl``, ``baseline``,
``threshold``, ``price``, ...) for the page theme and dark mode.

Missing values (NaN) leave gaps instead of drawing zeros; empty input gives a
small "no data" chart instead of an error.
"""

# The multiplication sign in docstrings is the unit we show readers, on purpose:
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import Any

import numpy as np
import numpy.typing as npt

from signalmint.formatting import fmt_date, fmt_num, fmt_ratio
from signalmint.records import to_datetime

__all__ = ["metric_chart", "price_chart", "sparkline", "volume_chart"]

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
TOP, RIGHT, BOTTOM, LEFT = 26, 12, 26, 52
MUTED, GRID = "#64748b", "#e2e8f0"
BAR, SPIKE, BASE, BRAND = "#cbd5e1", "#f76b15", "#0d9488", "#0d9488"
Floats = npt.NDArray[np.floating[Any]]
TOOLTIP_LIMIT = 400  # bars beyond this many get no per-bar <title> (keeps the SVG small)
LINE: dict[str, str] = {"fill": "none", "stroke_linejoin": "round", "stroke_linecap": "round"}


def _n(x: float) -> str:
    """A coordinate with at most one decimal: ``12.0`` -> ``"12"``."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _tag(name: str, text: str = "", *, children: str = "", **attrs: object) -> str:
    """One SVG element: ``text`` and every attribute value escaped, ``children`` markup as is.
    ``class_`` becomes ``class``; other underscores become dashes (``stroke_width``)."""
    rendered = "".join(f' {key.rstrip("_").replace("_", "-")}="{escape(str(value))}"' for key, value in attrs.items())
    inner = escape(text) + children
    return f"<{name}{rendered}>{inner}</{name}>" if inner else f"<{name}{rendered}/>"


def _svg(width: int, height: int, cls: str, title: str, desc: str, body: str) -> str:
    head = _tag("title", title) + _tag("desc", desc)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {escape(cls)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-family="{FONT}" font-size="11">{head}{body}</svg>'
    )


def _no_data(width: int, height: int, cls: str, title: str) -> str:
    frame = _tag("rect", class_="frame", x=0.5, y=0.5, width=width - 1, height=height - 1, rx=8,
                 fill="none", stroke=GRID, stroke_dasharray="4 4")  # fmt: skip
    text = _tag("text", "No data for this period", class_="empty", x=_n(width / 2), y=_n(height / 2),
                text_anchor="middle", dominant_baseline="middle", fill=MUTED, font_size=13)  # fmt: skip
    return _svg(width, height, f"{cls} is-empty", title, "No data.", frame + text)


def _floats(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _extent(*arrays: npt.NDArray[np.float64]) -> tuple[float, float] | None:
    """Min and max over the finite values of all arrays, or None when there are none."""
    finite = [a[np.isfinite(a)] for a in arrays if np.isfinite(a).any()]
    if not finite:
        return None
    return min(float(a.min()) for a in finite), max(float(a.max()) for a in finite)


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round tick values covering ``lo..hi`` (about ``count`` steps)."""
    if not hi > lo:
        lo, hi = (lo - 1, hi + 1) if lo != 0 else (0.0, 1.0)
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def _path(xs: Floats, ys: Floats) -> str:
    """An SVG path through the points, broken wherever a y is NaN."""
    parts: list[str] = []
    pen_down = False
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if math.isfinite(y):
            parts.append(f"{'L' if pen_down else 'M'}{_n(x)} {_n(y)}")
            pen_down = True
        else:
            pen_down = False
    return "".join(parts)


def _dates(times: npt.ArrayLike) -> list[datetime | None]:
    stamps = np.asarray(times).astype("datetime64[ns]").reshape(-1)
    return [None if np.isnat(t) else to_datetime(t) for t in stamps]


def _date_label(moment: datetime, span_days: float) -> str:
    """Months over long spans, days over weeks, clock times within a day or two."""
    return (
        f"{moment:%b %Y}" if span_days >= 600 else f"{moment:%b} {moment.day}" if span_days >= 2 else f"{moment:%H:%M}"
    )


def _anchor(x: float, width: int, room: float) -> str:
    """Text anchor that keeps a label centred on ``x`` yet inside the plot."""
    return "start" if x < LEFT + room else "end" if x > width - RIGHT - room else "middle"


def _x_axis(dates: list[datetime | None], xs: Floats, width: int, height: int) -> str:
    known = [d for d in dates if d is not None]
    if not known:
        return ""
    span = (max(known) - min(known)).total_seconds() / 86400
    picks = np.unique(np.linspace(0, len(dates) - 1, min(5, len(dates))).round().astype(int))
    out = []
    for i in picks.tolist():
        if (moment := dates[i]) is not None:
            out.append(_tag("text", _date_label(moment, span), class_="axis", x=_n(xs[i]), y=height - 8,
                            text_anchor=_anchor(float(xs[i]), width, 30), fill=MUTED))  # fmt: skip
    return "".join(out)


def _y_axis(ticks: list[float], scale_y: Callable[[float], float], width: int) -> str:
    out = []
    for tick in ticks:
        y = _n(scale_y(tick))
        out.append(_tag("line", class_="grid", x1=LEFT, x2=width - RIGHT, y1=y, y2=y, stroke=GRID))
        out.append(_tag("text", fmt_num(tick), class_="axis", x=LEFT - 8, y=y, text_anchor="end",
                        dominant_baseline="middle", fill=MUTED))  # fmt: skip
    return "".join(out)


def _columns(n: int, width: int) -> tuple[Floats, float]:
    """The x of each bar's centre, and the width of one bar's slot."""
    step = (width - LEFT - RIGHT) / n
    return LEFT + step * (np.arange(n) + 0.5), step


def _highlight_index(highlight: int | None, n: int) -> int | None:
    return highlight if highlight is not None and 0 <= highlight < n else None


def volume_chart(
    times: npt.NDArray[np.datetime64],
    volume: npt.ArrayLike,
    baseline: npt.ArrayLike,
    highlight: int | None,
    *,
    ratio_line: float | None = None,
    width: int = 760,
    height: int = 260,
    title: str = "Volume per bar against its rolling median baseline",
) -> str:
    """Volume bars, the baseline line, the optional threshold (baseline × ratio_line)
    dashed, and the ``highlight`` bar in the accent colour with its multiple.

    >>> t = np.arange(3).astype("datetime64[D]").astype("datetime64[ns]")
    >>> svg = volume_chart(t, np.array([1.0, 1.2, 9.0]), np.array([np.nan, 1.0, 1.1]), 2)
    >>> 'class="bar bar-hl"' in svg and "8.2×" in svg
    True
    """
    vol, base, dates = _floats(volume), _floats(baseline), _dates(times)
    n = len(vol)
    if len(base) != n or len(dates) != n:
        raise ValueError("volume_chart: times, volume and baseline must have the same length")
    with np.errstate(invalid="ignore", over="ignore"):
        threshold = base * ratio_line if ratio_line is not None else np.full(n, np.nan)
    extent = _extent(vol, base, threshold)
    if n == 0 or extent is None:
        return _no_data(width, height, "chart-volume", title)
    hi_index = _highlight_index(highlight, n)
    ticks = _ticks(0.0, max(extent[1], 0.0))
    top, plot_h = ticks[-1] if ticks[-1] > 0 else 1.0, height - TOP - BOTTOM
    xs, step = _columns(n, width)
    bar_w = min(max(step * 0.72, 0.6), 40.0)

    def scale_y(v: float) -> float:
        return TOP + plot_h * (1 - min(v, top) / top)

    parts = [_y_axis(ticks, scale_y, width)]
    if hi_index is not None:
        band = max(step, bar_w + 6)
        parts.append(_tag("rect", class_="hl-band", x=_n(xs[hi_index] - band / 2), y=TOP, width=_n(band),
                          height=plot_h, fill=SPIKE, fill_opacity=0.08, rx=3))  # fmt: skip
    for i, v in enumerate(vol.tolist()):
        if not math.isfinite(v) or v <= 0:
            continue
        y = scale_y(v)
        tip = f"{fmt_date(dates[i])} · volume {fmt_num(v)}" if n <= TOOLTIP_LIMIT else ""
        cls, fill = ("bar bar-hl", SPIKE) if i == hi_index else ("bar", BAR)
        parts.append(_tag("rect", children=_tag("title", tip) if tip else "", class_=cls, fill=fill,
                          x=_n(xs[i] - bar_w / 2), y=_n(y), width=_n(bar_w), height=_n(TOP + plot_h - y),
                          rx=_n(min(2, bar_w / 4))))  # fmt: skip
    if ratio_line is not None:
        parts.append(_tag("path", class_="threshold", d=_path(xs, TOP + plot_h * (1 - threshold / top)),
                          stroke=SPIKE, stroke_width=1.5, stroke_dasharray="5 4", **LINE))  # fmt: skip
    parts.append(_tag("path", class_="baseline", d=_path(xs, TOP + plot_h * (1 - base / top)),
                      stroke=BASE, stroke_width=2, **LINE))  # fmt: skip
    parts.append(_x_axis(dates, xs, width, height))
    desc = f"{n} bars"
    if hi_index is not None:
        v, b = float(vol[hi_index]), float(base[hi_index])
        ratio = v / b if math.isfinite(v) and math.isfinite(b) and b > 0 else math.nan
        label = fmt_ratio(ratio) if math.isfinite(ratio) else fmt_num(v)
        y = scale_y(v) if math.isfinite(v) else TOP + plot_h
        x = float(xs[hi_index])
        parts.append(_tag("text", label, class_="hl-label", x=_n(x), y=_n(max(y - 7, 12)), fill=SPIKE,
                          text_anchor=_anchor(x, width, 24), font_weight=700, font_size=12))  # fmt: skip
        desc += f"; highlighted bar on {fmt_date(dates[hi_index])}: volume {fmt_num(v)}, "
        desc += f"baseline {fmt_num(b)} ({label})"
    return _svg(width, height, "chart-volume", title, desc + ".", "".join(parts))


def price_chart(
    times: npt.NDArray[np.datetime64],
    close: npt.ArrayLike,
    highlight: int | None,
    *,
    width: int = 760,
    height: int = 180,
    title: str = "Closing price per bar",
) -> str:
    """The close as a line over a soft area, with the ``highlight`` bar marked.

    >>> t = np.arange(3).astype("datetime64[D]").astype("datetime64[ns]")
    >>> 'class="hl-dot"' in price_chart(t, np.array([10.0, 10.5, 12.0]), 2)
    True
    """
    price, dates = _floats(close), _dates(times)
    n = len(price)
    if len(dates) != n:
        raise ValueError("price_chart: times and close must have the same length")
    extent = _extent(price)
    if n == 0 or extent is None:
        return _no_data(width, height, "chart-price", title)
    hi_index = _highlight_index(highlight, n)
    pad = (extent[1] - extent[0]) * 0.08 or abs(extent[1]) * 0.01 or 1.0
    ticks = _ticks(extent[0] - pad, extent[1] + pad, 3)
    lo, hi, plot_h = ticks[0], ticks[-1], height - TOP - BOTTOM
    xs, _ = _columns(n, width)

    def scale_y(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    line = _path(xs, TOP + plot_h * (1 - (price - lo) / (hi - lo)))
    parts = [_y_axis(ticks, scale_y, width)]
    bottom = _n(TOP + plot_h)
    for run in line.split("M")[1:]:  # one shaded area under each unbroken run of the line
        first_x, last_x = run.split(" ", 1)[0], run.rsplit("L", 1)[-1].split(" ")[0]
        area = f"M{first_x} {bottom}L{run}L{last_x} {bottom}Z"
        parts.append(_tag("path", class_="price-area", d=area, fill=BRAND, fill_opacity=0.08))
    parts.append(_tag("path", class_="price", d=line, stroke=BRAND, stroke_width=2, **LINE))
    desc = f"{n} bars, close from {fmt_num(extent[0])} to {fmt_num(extent[1])}"
    if hi_index is not None:
        x, v = _n(xs[hi_index]), float(price[hi_index])
        parts.append(_tag("line", class_="hl-rule", x1=x, x2=x, y1=TOP, y2=bottom, stroke=SPIKE,
                          stroke_width=1.5, stroke_dasharray="3 3"))  # fmt: skip
        if math.isfinite(v):
            parts.append(_tag("circle", class_="hl-dot", cx=x, cy=_n(scale_y(v)), r=4.5, fill=SPIKE,
                              stroke="#fff", stroke_width=2))  # fmt: skip
            desc += f"; highlighted bar on {fmt_date(dates[hi_index])} closed at {fmt_num(v)}"
    parts.append(_x_axis(dates, xs, width, height))
    return _svg(width, height, "chart-price", title, desc + ".", "".join(parts))


def metric_chart(
    times: npt.NDArray[np.datetime64],
    values: npt.ArrayLike,
    *,
    title: str,
    unit: Callable[[float], str] = fmt_num,
    bars: bool = False,
    whole: bool = False,
    width: int = 760,
    height: int = 210,
) -> str:
    """A business figure over time (MRR, paying subscribers), as a line or as ``bars``.

    Its title is drawn on the chart; ``unit`` writes each y-axis label in the figure's unit
    (``$1,000``); the axis starts at 0 unless a value is negative; ``whole`` keeps the ticks
    on whole numbers (counts of people).

    >>> t = np.arange(3).astype("datetime64[D]").astype("datetime64[ns]")
    >>> svg = metric_chart(t, [0.0, 29.0, 58.0], title="MRR (USD)", unit=lambda v: f"${v:g}")
    >>> 'class="chart-title"' in svg and ">$0<" in svg and ">-" not in svg
    True
    """
    data, dates = _floats(values), _dates(times)
    n = len(data)
    if len(dates) != n:
        raise ValueError("metric_chart: times and values must have the same length")
    cls = "chart-volume" if bars else "chart-price"  # styled like the signal charts' bars and line
    extent = _extent(data)
    if n == 0 or extent is None:
        return _no_data(width, height, cls, title)
    lo, hi = min(extent[0], 0.0), max(extent[1], 0.0)
    if whole:
        hi = max(hi, lo + 4)
    ticks = _ticks(lo, hi, 4)
    if whole:
        ticks = [t for t in ticks if float(t).is_integer()]
    lo, hi = ticks[0], ticks[-1]
    top, plot_h = TOP + 18, height - TOP - 18 - BOTTOM

    def scale_y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [_tag("text", title, class_="chart-title", x=LEFT, y=16, fill="#0f172a", font_weight=600, font_size=12)]
    for tick in ticks:
        y = _n(scale_y(tick))
        parts.append(_tag("line", class_="grid", x1=LEFT, x2=width - RIGHT, y1=y, y2=y, stroke=GRID))
        parts.append(_tag("text", unit(tick), class_="axis", x=LEFT - 8, y=y, text_anchor="end",
                          dominant_baseline="middle", fill=MUTED))  # fmt: skip
    xs, step = _columns(n, width)
    zero = scale_y(0.0)
    if bars:
        bar_w = min(max(step * 0.6, 0.6), 36.0)
        for i, v in enumerate(data.tolist()):
            if math.isfinite(v) and v != 0:
                top_y = scale_y(v)
                parts.append(_tag("rect", children=_tag("title", f"{fmt_date(dates[i])}: {unit(v)}"), class_="bar",
                                  fill=BAR, x=_n(xs[i] - bar_w / 2), y=_n(min(top_y, zero)), width=_n(bar_w),
                                  height=_n(abs(zero - top_y)), rx=_n(min(2, bar_w / 4))))  # fmt: skip
    else:
        line = _path(xs, top + plot_h * (1 - (data - lo) / (hi - lo)))
        parts.append(_tag("path", class_="price", d=line, stroke=BRAND, stroke_width=2, **LINE))
        for i, v in enumerate(data.tolist()):
            if math.isfinite(v) and n <= 60:
                parts.append(_tag("circle", children=_tag("title", f"{fmt_date(dates[i])}: {unit(v)}"),
                                  class_="point", cx=_n(xs[i]), cy=_n(scale_y(v)), r=3, fill=BRAND))  # fmt: skip
    parts.append(_x_axis(dates, xs, width, height))
    desc = f"{n} points, from {unit(extent[0])} to {unit(extent[1])}"
    return _svg(width, height, cls, title, desc + ".", "".join(parts))


def sparkline(values: npt.ArrayLike, *, width: int = 120, height: int = 28, title: str = "Trend") -> str:
    """A tiny trend line with a dot on the last value; a flat dashed line when empty.

    >>> sparkline(np.array([1.0, 3.0, 2.0])).count("<path")
    2
    """
    data, pad = _floats(values), 3.0
    extent = _extent(data)
    if extent is None:
        mid = _n(height / 2)
        empty = _tag("line", class_="spark-empty", x1=pad, x2=width - pad, y1=mid, y2=mid, stroke=GRID,
                     stroke_width=1.5, stroke_dasharray="3 3")  # fmt: skip
        return _svg(width, height, "sparkline is-empty", title, "No data.", empty)
    lo, hi = extent
    n = len(data)
    xs = np.linspace(pad, width - pad, n) if n > 1 else np.array([width / 2])
    if hi > lo:
        ys = pad + (height - 2 * pad) * (1 - (data - lo) / (hi - lo))
    else:
        ys = np.where(np.isfinite(data), height / 2, np.nan)
    line = _path(xs, ys)
    last = int(np.flatnonzero(np.isfinite(ys))[-1])
    body = ""
    if np.isfinite(ys).all():  # shade under the line only when it is unbroken
        area = f"{line}L{_n(xs[-1])} {height}L{_n(xs[0])} {height}Z"
        body += _tag("path", class_="spark-area", d=area, fill=BRAND, fill_opacity=0.1)
    body += _tag("path", class_="spark", d=line, stroke=BRAND, stroke_width=1.5, **LINE)
    body += _tag("circle", class_="spark-dot", cx=_n(xs[last]), cy=_n(ys[last]), r=2.25, fill=BRAND)
    desc = f"{n} values from {fmt_num(lo)} to {fmt_num(hi)}, last {fmt_num(data[last])}."
    return _svg(width, height, "sparkline", title, desc, body)
