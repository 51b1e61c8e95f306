"""A subscriber's private feed as Atom and RSS 2.0: readable entries, exactly what their plan shows.

Each entry has a headline for a title ("AAPL traded 7.4× its usual volume"), a one-sentence
summary, and HTML content with the numbers, a link to the signal's page and its volume chart
(an ``<img>`` served under the same private feed address, so it follows the same plan). A
masked signal reads as words and says when its numbers show and which plan shows them now; a
masked field never appears, in the text, the HTML or the chart. Both formats come from the same
entries (:func:`entries`), so they always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape as html_escape
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ..formatting import fmt_num, fmt_pct, fmt_ratio, fmt_time, fmt_z
from ..records import Plan, Signal
from ..store.series import CHART_FIELDS
from .auth import Viewer
from .teaser import Veil, headline, veil_for

__all__ = ["Entry", "atom", "entries", "rss", "summary"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One feed entry, format-neutral."""

    id: int
    title: str
    summary: str
    html: str
    link: str
    updated: datetime
    chart_url: str | None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary(signal: Signal, veil: Veil | None) -> str:
    """One sentence: the numbers the viewer may see, or what hides them.

    >>> t = datetime(2011, 3, 4, 15, 5, tzinfo=UTC)
    >>> s = Signal("a", "GOOG", t, "volume_spike", 9.0, {"volume": 99189.0, "baseline": 12000.0,
    ...            "ratio": 8.27, "z": 11.4, "price_change": 0.0123})
    >>> summary(s, None).split(" against ")
    ['GOOG: 99,189 traded in the bar of 2011-03-04 15:05 UTC', \
'a usual 12,000 (8.3×, 11.4σ above its normal spread); the price moved +1.23%.']
    """
    p = signal.payload
    when = fmt_time(signal.time)
    if veil is not None:
        return f"Unusual volume on {signal.key} in the bar of {when}. {veil.message}."
    if all(_number(p.get(k)) for k in ("volume", "baseline", "ratio")):
        z = f", {fmt_z(p['z'])} above its normal spread" if _number(p.get("z")) else ""
        text = (
            f"{signal.key}: {fmt_num(p['volume'])} traded in the bar of {when} against a usual "
            f"{fmt_num(p['baseline'])} ({fmt_ratio(p['ratio'])}{z})"
        )
        if _number(p.get("price_change")):
            text += f"; the price moved {fmt_pct(p['price_change'])}"
        return text + "."
    shown = ", ".join(f"{k.replace('_', ' ')} {fmt_num(v) if _number(v) else v}" for k, v in sorted(p.items()))
    return f"{headline(signal)}" + (f": {shown}." if shown else ".")


def _html(signal: Signal, veil: Veil | None, link: str, chart_url: str | None, upgrade_url: str) -> str:
    parts = [f"<p>{html_escape(summary(signal, veil))}</p>"]
    rows = []
    labels = {"volume": "Volume", "baseline": "Usual volume", "ratio": "Multiple", "z": "Robust z"}
    formats = {"volume": fmt_num, "baseline": fmt_num, "ratio": fmt_ratio, "z": fmt_z}
    for name, label in labels.items():
        if _number(signal.payload.get(name)):
            rows.append(f"<tr><th>{label}</th><td>{html_escape(formats[name](signal.payload[name]))}</td></tr>")
    if _number(signal.payload.get("price_change")):
        rows.append(f"<tr><th>Price change</th><td>{html_escape(fmt_pct(signal.payload['price_change']))}</td></tr>")
    if rows:
        parts.append("<table>" + "".join(rows) + "</table>")
    if chart_url is not None:
        alt = f"Volume of {signal.key} around {fmt_time(signal.time)}, this bar highlighted"
        parts.append(f'<p><img src="{html_escape(chart_url)}" alt="{html_escape(alt)}" width="720"></p>')
    parts.append(f'<p><a href="{html_escape(link)}">Open the signal, its chart and its place in the record</a></p>')
    if veil is not None and veil.plan is not None:
        parts.append(
            f'<p><a href="{html_escape(upgrade_url)}">See the numbers now with {html_escape(veil.plan.name)}</a></p>'
        )
    return "".join(parts)


def entries(
    stored: Iterable[Signal], viewer: Viewer, now: datetime, plans: Sequence[Plan], base: str, chart_base: str
) -> list[Entry]:
    """The entries ``viewer`` may read at ``now``, newest first (``chart_base`` + ``/{id}/chart.svg``)."""
    out = []
    for signal in stored:
        grant = viewer.grant(signal.automation)
        view = grant.view(signal, now) if grant is not None else None
        if grant is None or view is None or signal.id is None:
            continue
        veil = veil_for(signal, view, grant, plans)
        hidden = grant.hidden_at(signal, now) or frozenset()
        link = f"{base}/signals/{signal.id}"
        chart = None if hidden & CHART_FIELDS else f"{chart_base}/{signal.id}/chart.svg"
        upgrade = f"{base}/automations/{signal.automation}#pricing"
        out.append(
            Entry(
                id=signal.id,
                title=headline(view),
                summary=summary(view, veil),
                html=_html(view, veil, link, chart, upgrade),
                link=link,
                updated=signal.time,
                chart_url=chart,
            )
        )
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def atom(items: Sequence[Entry], *, title: str, feed_id: str, self_url: str, site: str, now: datetime) -> str:
    updated = _iso(items[0].updated if items else now)
    body = []
    for e in items:
        body.append(
            f'<entry><id>{escape(e.link)}</id><title type="text">{escape(e.title)}</title>'
            f"<updated>{_iso(e.updated)}</updated><published>{_iso(e.updated)}</published>"
            f'<link rel="alternate" type="text/html" href={quoteattr(e.link)}/>'
            f'<summary type="text">{escape(e.summary)}</summary>'
            f'<content type="html">{escape(e.html)}</content></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>{escape(feed_id)}</id><title>{escape(title)}</title><updated>{updated}</updated>"
        f"<author><name>{escape(title)}</name></author>"
        f'<link rel="self" type="application/atom+xml" href={quoteattr(self_url)}/>'
        f'<link rel="alternate" type="text/html" href={quoteattr(site)}/>'
        f"{''.join(body)}</feed>"
    )


def rss(items: Sequence[Entry], *, title: str, self_url: str, site: str, now: datetime) -> str:
    built = format_datetime((items[0].updated if items else now).astimezone(UTC), usegmt=True)
    body = []
    for e in items:
        body.append(
            f"<item><title>{escape(e.title)}</title><link>{escape(e.link)}</link>"
            f'<guid isPermaLink="true">{escape(e.link)}</guid>'
            f"<pubDate>{format_datetime(e.updated.astimezone(UTC), usegmt=True)}</pubDate>"
            f"<description>{escape(e.html)}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
        f"<title>{escape(title)}</title><link>{escape(site)}</link>"
        f"<description>{escape(title)}: the signals your plan shows</description>"
        f"<lastBuildDate>{built}</lastBuildDate>"
        f'<atom:link href={quoteattr(self_url)} rel="self" type="application/rss+xml"/>'
        f"{''.join(body)}</channel></rss>"
    )


def chart_context(options: Mapping[str, Any]) -> tuple[int, float | None]:
    """The detector's window and ratio line, for the chart of a signal."""
    ratio = options.get("ratio")
    return int(options.get("window", 30)), float(ratio) if ratio else None
