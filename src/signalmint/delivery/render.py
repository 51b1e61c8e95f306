"""Signals -> what a subscriber reads: a subject, plain text, email-safe HTML and a chart PNG.

Render once per signal (or group) and plan view, then hand the result to every channel:
:func:`signal_text` and :func:`group_text` take signals in the API's JSON shape
(``web.serialize.signal_json`` after ``access.masked_json``), so a field the plan hides is
absent from ``payload``, listed in ``masked`` and shown as "upgrade to see", never as a zero.
The HTML uses tables and inline styles only (what email clients keep) and refers to the chart
as ``cid:`` :data:`CHART_CID` when ``chart=True``; the email channel attaches the PNG under
that Content-ID. :func:`chart_png` draws the chart with Pillow, no browser or matplotlib.
"""

# The multiplication sign and sigma are units we show readers, on purpose:
from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from signalmint.formatting import fmt_num, fmt_pct, fmt_ratio, fmt_time, fmt_value, fmt_z
from signalmint.records import to_datetime, to_datetime64

__all__ = ["CHART_CID", "Rendered", "chart_png", "group_text", "signal_text"]

#: Content-ID of the chart in emails (``<img src="cid:chart@signalmint">``).
CHART_CID = "chart@signalmint"
UPGRADE = "upgrade to see"
FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
INK, MUTED, LINE, ACCENT, BRAND = "#0f172a", "#64748b", "#e2e8f0", "#c2410c", "#0d9488"


class Rendered(NamedTuple):
    subject: str
    text: str
    html: str


# --- the numbers of a signal ------------------------------------------------------------------


class _Field(NamedTuple):
    name: str  # payload key
    label: str
    fmt: Callable[[Any], str]


FIELDS = (
    _Field("ratio", "Multiple of usual volume", fmt_ratio),
    _Field("volume", "Volume", fmt_num),
    _Field("baseline", "Usual volume (rolling median)", fmt_num),
    _Field("z", "Robust z-score", fmt_z),
    _Field("price_change", "Price change", fmt_pct),
)
INTERNAL = frozenset({"mad", "history"})  # detector bookkeeping, not news to a reader
KIND_LABELS = {"volume_spike": "unusual volume"}


def _masked(signal: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(signal.get("masked") or ())


def _is_masked(signal: Mapping[str, Any], name: str) -> bool:
    masked = _masked(signal)
    return name in masked or "*" in masked or (name == "z" and "z" not in _payload(signal) and "score" in masked)


def _payload(signal: Mapping[str, Any]) -> Mapping[str, Any]:
    payload: Mapping[str, Any] = signal.get("payload") or {}
    return payload


def _rows(signal: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(label, formatted value or None when masked) for what a reader wants to know."""
    payload = _payload(signal)
    rows: list[tuple[str, str | None]] = []
    known = {f.name for f in FIELDS}
    for f in FIELDS:
        value = payload.get(f.name, signal.get("score") if f.name == "z" else None)
        if _is_masked(signal, f.name):
            rows.append((f.label, None))
        elif value is not None:
            rows.append((f.label, f.fmt(value)))
    for name in sorted(set(payload) - known - INTERNAL):
        rows.append((name.replace("_", " ").capitalize(), fmt_value(payload[name])))
    return rows


def _moment(signal: Mapping[str, Any]) -> datetime | None:
    value = signal.get("time")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None


def _ratio(signal: Mapping[str, Any]) -> str | None:
    value = _payload(signal).get("ratio")
    return None if value is None or _is_masked(signal, "ratio") else fmt_ratio(value)


def _headline(signal: Mapping[str, Any]) -> str:
    key = str(signal.get("key", "?"))
    ratio = _ratio(signal)
    if ratio is not None and ratio != "—":
        return f"{key} traded {ratio} its usual volume"
    kind = str(signal.get("kind", "signal"))
    return f"{key}: {KIND_LABELS.get(kind, kind.replace('_', ' '))}"


def _url(base_url: str, signal: Mapping[str, Any]) -> str:
    url = str(signal.get("url") or f"/signals/{signal.get('id')}")
    return url if url.startswith(("http://", "https://")) else base_url.rstrip("/") + "/" + url.lstrip("/")


def _upgrade_url(base_url: str, signal: Mapping[str, Any], upgrade_url: str | None) -> str:
    return upgrade_url or f"{base_url.rstrip('/')}/automations/{signal.get('automation', '')}#pricing"


# --- plain text -------------------------------------------------------------------------------

#: Where the subscriber's own unsubscribe link goes in a rendered template (HTML escaping keeps it as is).
_SLOT = "\x00unsubscribe-link\x00"
_TEMPLATES: dict[tuple[Any, ...], Rendered] = {}
_MAX_TEMPLATES = 512


def _with_link(key: tuple[Any, ...], render: Callable[[str | None], Rendered], unsubscribe_url: str | None) -> Rendered:
    """``render(unsubscribe_url)``, made once per signal (or group) and view: the subscribers of a
    view differ only in their unsubscribe link, which is spliced into a template rendered with
    :data:`_SLOT` in its place (the same text as rendering with the link; ``key`` names the view:
    the signals' ``repr``, which holds every value they are rendered from, and the options)."""
    if not unsubscribe_url:
        return render(unsubscribe_url)
    template = _TEMPLATES.get(key)
    if template is None:
        template = render(_SLOT)
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))  # the oldest view
        _TEMPLATES[key] = template
    subject, text, html = template
    if _SLOT in subject or text.count(_SLOT) != 1 or html.count(_SLOT) != 1:  # the slot's text in a signal
        return render(unsubscribe_url)
    return Rendered(subject, text.replace(_SLOT, unsubscribe_url), html.replace(_SLOT, escape(unsubscribe_url)))


def _footer_text(automation_title: str, unsubscribe_url: str | None) -> str:
    text = f"--\nYou receive these alerts because you subscribed to {automation_title}."
    return text + (f"\nUnsubscribe: {unsubscribe_url}" if unsubscribe_url else "")


def signal_text(
    signal: Mapping[str, Any],
    automation_title: str,
    *,
    base_url: str,
    unsubscribe_url: str | None = None,
    upgrade_url: str | None = None,
    chart: bool = False,
) -> Rendered:
    """One signal as (subject, text, html); the text starts with the subject line.

    >>> doc = {"id": 42, "automation": "volume", "key": "AAPL", "time": "2013-02-27T21:00:00Z",
    ...        "kind": "volume_spike", "score": None, "url": "/signals/42",
    ...        "payload": {"ratio": 7.43, "price_change": 0.0123}, "masked": ["score", "volume", "z"]}
    >>> subject, text, html = signal_text(doc, "Unusual volume", base_url="https://sm.example")
    >>> subject
    'AAPL traded 7.4× its usual volume'
    >>> print(text.split("\\n\\n")[2])
    Multiple of usual volume   7.4×
    Volume                     upgrade to see
    Robust z-score             upgrade to see
    Price change               +1.23%
    >>> "https://sm.example/signals/42" in html and "upgrade to see" in html
    True
    """
    key = ("signal", repr(signal), automation_title, base_url, upgrade_url, chart)
    return _with_link(
        key, lambda link: _signal_text(signal, automation_title, base_url, link, upgrade_url, chart), unsubscribe_url
    )


def _signal_text(
    signal: Mapping[str, Any],
    automation_title: str,
    base_url: str,
    unsubscribe_url: str | None,
    upgrade_url: str | None,
    chart: bool,
) -> Rendered:
    subject = _headline(signal)
    rows = _rows(signal)
    width = max((len(label) for label, _ in rows), default=0) + 3
    lines = [subject, "", f"{automation_title} · {fmt_time(_moment(signal))}", ""]
    lines += [f"{label:<{width}}{UPGRADE if value is None else value}" for label, value in rows]
    lines += ["", f"Signal page: {_url(base_url, signal)}"]
    if any(value is None for _, value in rows):
        lines.append(
            f"Some numbers are hidden on your plan; upgrade to see them: {_upgrade_url(base_url, signal, upgrade_url)}"
        )
    lines += ["", _footer_text(automation_title, unsubscribe_url)]
    html = _document(
        subject,
        automation_title,
        _signal_html(signal, automation_title, base_url, upgrade_url, chart),
        unsubscribe_url,
    )
    return Rendered(subject, "\n".join(lines), html)


def group_text(
    signals: Sequence[Mapping[str, Any]],
    automation_title: str,
    *,
    base_url: str,
    unsubscribe_url: str | None = None,
    upgrade_url: str | None = None,
) -> Rendered:
    """Several signals in one message (grouping): a subject naming the first few, one line each.

    >>> docs = [{"id": i, "key": k, "time": "2024-01-02T14:30:00Z", "payload": {"ratio": r}}
    ...         for i, (k, r) in enumerate([("AAPL", 7.4), ("MSFT", 5.06), ("TSLA", 4), ("NVDA", 3.2)])]
    >>> group_text(docs, "Unusual volume", base_url="https://sm.example").subject
    '4 alerts: AAPL 7.4×, MSFT 5.1×, TSLA 4.0× and 1 more'
    """
    if len(signals) == 1:
        return signal_text(signals[0], automation_title, base_url=base_url, unsubscribe_url=unsubscribe_url,
                           upgrade_url=upgrade_url)  # fmt: skip
    key = ("group", repr(signals), automation_title, base_url, upgrade_url)
    return _with_link(
        key, lambda link: _group_text(signals, automation_title, base_url, link, upgrade_url), unsubscribe_url
    )


def _group_text(
    signals: Sequence[Mapping[str, Any]],
    automation_title: str,
    base_url: str,
    unsubscribe_url: str | None,
    upgrade_url: str | None,
) -> Rendered:
    named = [" ".join(filter(None, (str(s.get("key", "?")), _ratio(s)))) for s in signals[:3]]
    more = f" and {len(signals) - 3} more" if len(signals) > 3 else ""
    subject = f"{len(signals)} alerts: {', '.join(named)}{more}"
    lines = [subject, "", automation_title, ""]
    for s in signals:
        what = _headline(s)
        if _is_masked(s, "ratio"):
            what += f" (multiple: {UPGRADE})"
        lines.append(f"{what} · {fmt_time(_moment(s))} · {_url(base_url, s)}")
    if any(_is_masked(s, "ratio") for s in signals):
        lines += ["", f"Upgrade to see every number: {_upgrade_url(base_url, signals[0], upgrade_url)}"]
    lines += ["", _footer_text(automation_title, unsubscribe_url)]
    body = _group_html(signals, base_url, upgrade_url)
    return Rendered(subject, "\n".join(lines), _document(subject, automation_title, body, unsubscribe_url))


# --- HTML (tables and inline styles: what email clients keep) --------------------------------


def _a(href: str, text: str, style: str = f"color:{BRAND};") -> str:
    return f'<a href="{escape(href)}" style="{style}">{escape(text)}</a>'


def _value_html(value: str | None, upgrade: str) -> str:
    if value is None:
        return _a(upgrade, UPGRADE, f"color:{MUTED};font-style:italic;")
    return escape(value)


def _signal_html(signal: Mapping[str, Any], title: str, base_url: str, upgrade_url: str | None, chart: bool) -> str:
    upgrade = _upgrade_url(base_url, signal, upgrade_url)
    key, ratio = escape(str(signal.get("key", "?"))), _ratio(signal)
    if ratio is not None and ratio != "—":
        headline = f'{key} traded <span style="color:{ACCENT};">{escape(ratio)}</span> its usual volume'
    else:
        headline = escape(_headline(signal))
    parts = [
        f'<tr><td style="padding:24px 28px 4px;">'
        f'<div style="font-size:12px;color:{MUTED};letter-spacing:.04em;text-transform:uppercase;">'
        f"{escape(title)}</div>"
        f'<h1 style="margin:6px 0 4px;font-size:22px;line-height:1.3;color:{INK};font-weight:700;">{headline}</h1>'
        f'<div style="font-size:13px;color:{MUTED};">{escape(fmt_time(_moment(signal)))}</div></td></tr>'
    ]
    if chart:
        alt = f"Volume of {signal.get('key', '')} against its usual level, the spike highlighted"
        parts.append(
            f'<tr><td style="padding:12px 28px 0;"><img src="cid:{CHART_CID}" width="544" alt="{escape(alt)}" '
            f'style="display:block;width:100%;max-width:544px;height:auto;border:0;"></td></tr>'
        )
    cells = "".join(
        f'<tr><td style="padding:7px 0;border-bottom:1px solid {LINE};color:{MUTED};">{escape(label)}</td>'
        f'<td style="padding:7px 0;border-bottom:1px solid {LINE};text-align:right;font-weight:600;color:{INK};">'
        f"{_value_html(value, upgrade)}</td></tr>"
        for label, value in _rows(signal)
    )
    parts.append(
        f'<tr><td style="padding:12px 28px 0;"><table role="presentation" width="100%" cellpadding="0" '
        f'cellspacing="0" style="font-size:14px;border-collapse:collapse;">{cells}</table></td></tr>'
    )
    button = (f"display:inline-block;background:{BRAND};color:#ffffff;text-decoration:none;padding:10px 18px;"
              "border-radius:6px;font-weight:600;font-size:14px;")  # fmt: skip
    parts.append(
        f'<tr><td style="padding:20px 28px 24px;">{_a(_url(base_url, signal), "View the signal", button)}</td></tr>'
    )
    return "".join(parts)


def _group_html(signals: Sequence[Mapping[str, Any]], base_url: str, upgrade_url: str | None) -> str:
    head = "".join(
        f'<th style="text-align:{align};padding:6px 0;color:{MUTED};font-weight:600;font-size:12px;'
        f'border-bottom:1px solid {LINE};">{name}</th>'
        for name, align in (("Symbol", "left"), ("Multiple", "right"), ("Price", "right"), ("Time", "right"))
    )
    rows = []
    for s in signals:
        upgrade, payload = _upgrade_url(base_url, s, upgrade_url), _payload(s)
        ratio = None if _is_masked(s, "ratio") else fmt_ratio(payload.get("ratio"))
        price = None if _is_masked(s, "price_change") else fmt_pct(payload.get("price_change"))
        cell = f'style="padding:7px 0;border-bottom:1px solid {LINE};text-align:right;"'
        rows.append(
            f'<tr><td style="padding:7px 0;border-bottom:1px solid {LINE};font-weight:600;">'
            f"{_a(_url(base_url, s), str(s.get('key', '?')))}</td>"
            f'<td {cell}><span style="color:{ACCENT};font-weight:600;">{_value_html(ratio, upgrade)}</span></td>'
            f"<td {cell}>{_value_html(price, upgrade)}</td>"
            f'<td {cell}><span style="color:{MUTED};">{escape(fmt_time(_moment(s)))}</span></td></tr>'
        )
    return (
        f'<tr><td style="padding:24px 28px;"><h1 style="margin:0 0 12px;font-size:20px;color:{INK};">'
        f'{len(signals)} new alerts</h1><table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'style="font-size:14px;border-collapse:collapse;color:{INK};"><tr>{head}</tr>{"".join(rows)}</table></td></tr>'
    )


def _document(subject: str, title: str, body_rows: str, unsubscribe_url: str | None) -> str:
    footer = f"You receive these alerts because you subscribed to {escape(title)}."
    if unsubscribe_url:
        footer += " " + _a(unsubscribe_url, "Unsubscribe", f"color:{MUTED};text-decoration:underline;")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(subject)}</title></head>"
        f'<body style="margin:0;padding:0;background:#f1f5f9;font-family:{FONT};">'
        f'<div style="display:none;max-height:0;overflow:hidden;">{escape(subject)}</div>'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f1f5f9;">'
        '<tr><td align="center" style="padding:24px 12px;">'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="width:100%;max-width:600px;'
        f'background:#ffffff;border:1px solid {LINE};border-radius:8px;font-family:{FONT};color:{INK};">'
        f"{body_rows}</table>\n"  # the footer on a line of its own: what differs between subscribers
        f'<p style="max-width:600px;margin:16px auto 0;font-size:12px;line-height:1.5;color:{MUTED};'
        f'font-family:{FONT};">{footer}</p></td></tr></table></body></html>'
    )


# --- the chart as a PNG -------------------------------------------------------------------------

SCALE = 2  # drawn at twice the size, then scaled down: smooth lines without a vector renderer
TOP, RIGHT, BOTTOM, LEFT = 30, 12, 24, 54
BAR, SPIKE, BAND, GRID = "#cbd5e1", "#f76b15", "#fdebdc", "#e2e8f0"


_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: float) -> _Font:
    return ImageFont.load_default(size=size * SCALE)


def _ticks(top: float, count: int = 4) -> list[float]:
    """Round ticks from 0 to at least ``top``."""
    if not top > 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    return [k * step for k in range(math.ceil(top / step - 1e-9) + 1)]


def _moments(times: npt.ArrayLike | Sequence[datetime]) -> list[datetime | None]:
    items = list(times) if isinstance(times, Sequence) else None
    if items is not None and items and all(isinstance(t, datetime) for t in items):
        return [to_datetime(to_datetime64(t if t.tzinfo else t.replace(tzinfo=UTC))) for t in items]
    stamps = np.asarray(times).astype("datetime64[ns]").reshape(-1)
    return [None if np.isnat(t) else to_datetime(t) for t in stamps]


def _date_label(moment: datetime, span_days: float) -> str:
    """Months over years, days over weeks, day and time over a few days, times within a day or so."""
    if span_days >= 600:
        return f"{moment:%b %Y}"
    if span_days >= 7:
        return f"{moment:%b} {moment.day}"
    return f"{moment:%b} {moment.day} {moment:%H:%M}" if span_days >= 1.5 else f"{moment:%H:%M}"


def chart_png(
    times: npt.ArrayLike | Sequence[datetime],
    volume: npt.ArrayLike,
    baseline: npt.ArrayLike,
    highlight: int | None,
    *,
    width: int = 720,
    height: int = 260,
) -> bytes:
    """Volume bars, the rolling baseline and the ``highlight`` bar (with its multiple) as a PNG.

    NaN volumes leave gaps and NaN baselines break the line; a palette PNG of a few kilobytes.

    >>> t = np.arange(3).astype("datetime64[D]")
    >>> chart_png(t, [1.0, 1.2, 9.0], [np.nan, 1.0, 1.1], 2)[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    vol = np.asarray(volume, dtype=np.float64).reshape(-1)
    base = np.asarray(baseline, dtype=np.float64).reshape(-1)
    dates = _moments(times)
    n = len(vol)
    if len(base) != n or len(dates) != n:
        raise ValueError("chart_png: times, volume and baseline must have the same length")
    s = SCALE
    image = Image.new("RGB", (width * s, height * s), "#ffffff")
    draw = ImageDraw.Draw(image)
    small, bold = _font(11), _font(12)
    finite = np.concatenate([vol[np.isfinite(vol)], base[np.isfinite(base)]])
    if n == 0 or not len(finite):
        draw.text((width * s / 2, height * s / 2), "No data for this period", fill=MUTED, font=_font(13), anchor="mm")
        return _png(image, width, height)
    ticks = _ticks(max(float(finite.max()), 0.0))
    top = ticks[-1] or 1.0
    plot_h = height - TOP - BOTTOM
    step = (width - LEFT - RIGHT) / n

    def y_of(v: float) -> float:
        return (TOP + plot_h * (1 - min(max(v, 0.0), top) / top)) * s

    def x_of(i: int) -> float:
        return (LEFT + step * (i + 0.5)) * s

    for tick in ticks:
        draw.line([(LEFT * s, y_of(tick)), ((width - RIGHT) * s, y_of(tick))], fill=GRID, width=s)
        draw.text(((LEFT - 8) * s, y_of(tick)), fmt_num(tick), fill=MUTED, font=small, anchor="rm")
    hi = highlight if highlight is not None and 0 <= highlight < n else None
    bar_w = min(max(step * 0.72, 0.8), 40.0) * s
    if hi is not None:
        band = max(step, bar_w / s + 6) * s
        draw.rectangle([x_of(hi) - band / 2, TOP * s, x_of(hi) + band / 2, (TOP + plot_h) * s], fill=BAND)
    for i, v in enumerate(vol.tolist()):
        if math.isfinite(v) and v > 0:
            half = max(bar_w, 3 * s) / 2 if i == hi else bar_w / 2  # the spike stays visible among many bars
            x0, x1 = x_of(i) - half, x_of(i) + half
            draw.rectangle([x0, y_of(v), max(x1 - 1, x0), (TOP + plot_h) * s], fill=SPIKE if i == hi else BAR)
    run: list[tuple[float, float]] = []
    for i, b in enumerate([*base.tolist(), math.nan]):
        if math.isfinite(b):
            run.append((x_of(i), y_of(b)))
            continue
        if len(run) > 1:
            draw.line(run, fill=BRAND, width=2 * s, joint="curve")
        run = []
    known = [d for d in dates if d is not None]
    if known:
        span = (max(known) - min(known)).total_seconds() / 86400
        shown = ""
        for i in sorted(set(np.linspace(0, n - 1, min(5, n)).round().astype(int).tolist())):
            if (moment := dates[i]) is not None and (label := _date_label(moment, span)) != shown:
                anchor = "ls" if i == 0 and n > 1 else "rs" if i == n - 1 and n > 1 else "ms"
                draw.text((x_of(i), (height - 7) * s), label, fill=MUTED, font=small, anchor=anchor)
                shown = label
    draw.rectangle([LEFT * s, 9 * s, (LEFT + 10) * s, 17 * s], fill=BAR)  # the legend
    draw.text(((LEFT + 15) * s, 13 * s), "Volume", fill=MUTED, font=small, anchor="lm")
    x = (LEFT + 15 + 18) * s + draw.textlength("Volume", font=small)
    draw.line([(x, 13 * s), (x + 16 * s, 13 * s)], fill=BRAND, width=2 * s)
    draw.text((x + 21 * s, 13 * s), "Usual volume (rolling median)", fill=MUTED, font=small, anchor="lm")
    if hi is not None and math.isfinite(vol[hi]):
        v, b = float(vol[hi]), float(base[hi])
        label = fmt_ratio(v / b) if math.isfinite(b) and b > 0 else fmt_num(v)
        x = min(max(x_of(hi), (LEFT + 24) * s), (width - RIGHT - 24) * s)
        _label(draw, x, max(y_of(v) - 6 * s, 24 * s), label, bold)
    return _png(image, width, height)


def _label(draw: ImageDraw.ImageDraw, x: float, baseline: float, label: str, font: _Font) -> None:
    """``label`` centred on ``x`` with a white halo; a trailing "×" is drawn as a cross, since
    Pillow's bundled font has no glyph for it."""
    number, cross = (label[:-1], True) if label.endswith("×") else (label, False)
    size = 12 * SCALE * 0.5 if cross else 0.0
    gap = 1.5 * SCALE if cross else 0.0
    left = x - (draw.textlength(number, font=font) + gap + size) / 2
    draw.text((left, baseline), number, fill=ACCENT, font=font, anchor="ls", stroke_width=SCALE, stroke_fill="#ffffff")
    if cross:
        x0 = left + draw.textlength(number, font=font) + gap
        y0 = baseline - size * 1.05
        for width, fill in ((4 * SCALE, "#ffffff"), (int(1.6 * SCALE), ACCENT)):
            draw.line([(x0, y0), (x0 + size, y0 + size)], fill=fill, width=width)
            draw.line([(x0, y0 + size), (x0 + size, y0)], fill=fill, width=width)


def _png(image: Image.Image, width: int, height: int) -> bytes:
    small = image.resize((width, height), Image.Resampling.LANCZOS)
    palette = small.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()
