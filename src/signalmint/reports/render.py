"""Rendering a report: :class:`~signalmint.reports.build.ReportData` in, a
:class:`~signalmint.records.Report` (web HTML, email HTML, PDF) out. Pure: no store, no clock."""

from __future__ import annotations

import math
from functools import cache
from html import escape
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..records import Report
from .build import ReportData
from .charts import bars_png, bars_svg, png_data_uri
from .pdf import render_pdf

__all__ = ["render_report", "standalone"]

HERE = Path(__file__).parent
APP_CSS = HERE.parent / "web" / "static" / "app.css"
KIND_LABELS = {"day": "Daily", "week": "Weekly", "month": "Monthly", "run": "Scheduled"}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def fmt_score(value: float | None) -> str:
    """A score with two decimals.

    >>> fmt_score(12.3456), fmt_score(float("nan"))
    ('12.35', '—')
    """
    return f"{value:,.2f}" if value is not None and _finite(value) else "—"


def fmt_num(value: float | int | None) -> str:
    """A number: whole with thousands separators, else four significant digits.

    >>> fmt_num(1234567), fmt_num(0.012345), fmt_num(187.5)
    ('1,234,567', '0.01235', '187.5')
    """
    if value is None or not _finite(float(value)):
        return "—"
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def fmt_signed_pct(value: float | None, signed: bool = True) -> str:
    """A fraction as a percentage with two decimals, signed unless told not to.

    >>> fmt_signed_pct(0.0123), fmt_signed_pct(-0.5), fmt_signed_pct(0.02, False)
    ('+1.23%', '-50.00%', '2.00%')
    """
    if value is None or not _finite(value):
        return "—"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def fmt_pct0(value: float | None) -> str:
    return f"{100 * value:.0f}%" if value is not None and _finite(value) else "—"


@cache
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(score=fmt_score, num=fmt_num, signed_pct=fmt_signed_pct, pct0=fmt_pct0)
    return env


def _charts(data: ReportData) -> tuple[str, str, str]:
    """(signals per day as SVG, top movers as SVG, signals per day as a PNG data URI)."""
    if not data.spec.contents.charts:
        return "", "", ""
    labels = [day[5:] for day, _ in data.daily]
    counts = [float(n) for _, n in data.daily]
    daily_svg = daily_png = movers_svg = ""
    if len(data.daily) > 1:
        daily_svg = bars_svg(labels, counts, title="Signals per day")
        daily_png = png_data_uri(bars_png(labels, counts, title="Signals per day"))
    if data.movers:
        movers_svg = bars_svg(
            [m.key for m in data.movers], [100 * m.change for m in data.movers], title="Move over the period (%)"
        )
    return daily_svg, movers_svg, daily_png


def render_report(data: ReportData, *, site_title: str = "signalmint", link: str = "") -> Report:
    """The report's three renderings (``id`` 0 and ``created_at`` the data's time: the store assigns
    the id). ``link`` goes into the email as its button (the report's page)."""
    daily_svg, movers_svg, daily_png = _charts(data)
    kind = KIND_LABELS[data.spec.period]
    body = _env().get_template("body.html").render(d=data, kind_label=kind, daily_svg=daily_svg, movers_svg=movers_svg)
    email = (
        _env()
        .get_template("email.html")
        .render(d=data, kind_label=kind, daily_png=daily_png, site_title=site_title, link=link)
    )
    return Report(
        id=0,
        automation=data.automation,
        name=data.spec.name,
        title=data.title,
        period_key=data.period.key,
        period_start=data.period.start,
        period_end=data.period.end,
        created_at=data.generated,
        signal_count=data.signal_count,
        top=data.summary,
        html=body,
        email_html=email,
        pdf=render_pdf(data, site_title=site_title),
    )


def standalone(report: Report, *, site_title: str = "signalmint") -> str:
    """The web rendering as a document of its own (the site's stylesheet inlined): for the
    command line's ``--out`` and for reading offline."""
    css = APP_CSS.read_text(encoding="utf-8") if APP_CSS.is_file() else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(report.title)} · {escape(report.period_key)} · {escape(site_title)}</title>\n"
        f'<style>\n{css}\n</style>\n</head>\n<body>\n<main id="main"><div class="wrap" style="padding-top: 32px; '
        f'padding-bottom: 48px">\n{report.html}\n</div></main>\n</body>\n</html>\n'
    )
