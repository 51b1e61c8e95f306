"""The PDF rendering, with reportlab (BSD; pure Python plus wheels, no system libraries).

Text stays text (Helvetica, extractable by any PDF reader), tables are reportlab tables and the
chart a reportlab drawing, so the file is small and sharp at any zoom. ``invariant`` output:
the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from .build import ReportData

__all__ = ["render_pdf"]

INK = colors.HexColor("#0f172a")
MUTED = colors.HexColor("#64748b")
BRAND = colors.HexColor("#0d9488")
RULE = colors.HexColor("#e2e8f0")
KINDS = {"day": "daily", "week": "weekly", "month": "monthly", "run": "scheduled"}


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    return {
        "kicker": ParagraphStyle("kicker", parent=base["Normal"], fontSize=8.5, textColor=BRAND, leading=11),
        "title": ParagraphStyle("title", parent=base["Title"], alignment=0, fontSize=19, leading=23, textColor=INK),
        "sub": ParagraphStyle("sub", parent=base["Normal"], fontSize=10, textColor=MUTED, leading=13),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=12.5, leading=16, textColor=INK, spaceBefore=10),
        "cell": ParagraphStyle("cell", parent=base["Normal"], fontSize=8.5, leading=10.5, textColor=INK),
        "note": ParagraphStyle("note", parent=base["Normal"], fontSize=8, leading=10.5, textColor=MUTED),
    }


def _pct(value: float, signed: bool = True) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.0f}%"


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:.4g}"


def _table(rows: list[list[Any]], widths: list[float], right: tuple[int, ...] = ()) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    style: list[Any] = [
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
        ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
        ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
        ("TEXTCOLOR", (0, 1), (-1, -1), INK),
        ("LINEBELOW", (0, 0), (-1, -1), 0.4, RULE),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 3.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3.5),
    ]
    style += [("ALIGN", (c, 0), (c, -1), "RIGHT") for c in right]
    table.setStyle(TableStyle(style))
    return table


def _daily_chart(data: ReportData, width: float) -> Drawing:
    drawing = Drawing(width, 120)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.height = 28, 18, 92
    chart.width = int(width - 36)
    chart.data = [[n for _, n in data.daily]]
    every = max(1, -(-len(data.daily) // 12))
    chart.categoryAxis.categoryNames = [d[5:] if i % every == 0 else "" for i, (d, _) in enumerate(data.daily)]
    chart.categoryAxis.labels.fontSize = 6.5
    chart.categoryAxis.labels.fillColor = MUTED
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueStep = max(1, -(-max([n for _, n in data.daily] or [1]) // 5))
    chart.valueAxis.labels.fontSize = 6.5
    chart.valueAxis.labels.fillColor = MUTED
    chart.bars[0].fillColor = BRAND
    chart.bars[0].strokeColor = None
    drawing.add(chart)
    return drawing


def render_pdf(data: ReportData, *, site_title: str = "signalmint") -> bytes:
    """The report as a PDF file (A4)."""
    st = _styles()
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=f"{data.title} · {data.period.key}",
        author=site_title,
        subject=f"{data.automation} {data.spec.name} {data.period.key}",
        invariant=1,
    )
    width = doc.width
    flow: list[Flowable] = [
        Paragraph(escape(f"{site_title} · {KINDS[data.spec.period]} report · {data.period.key}").upper(), st["kicker"]),
        Paragraph(escape(data.title), st["title"]),
        Paragraph(escape(f"{data.period_label} · {data.signal_count:,} signals on {data.key_count:,} keys"), st["sub"]),
        Spacer(1, 6),
    ]
    track = data.track or data.period_outcomes
    primary = track[len(track) // 2].horizon if track else None
    contents = data.spec.contents
    if contents.top_signals:
        flow.append(Paragraph("Top signals", st["h2"]))
        if data.top:
            head = ["#", "Key", f"Time ({data.spec.timezone})", "Score", "Numbers"]
            if contents.outcomes:
                head.append(f"After {primary} bars" if primary else "After")
            rows: list[list[Any]] = [head]
            for i, row in enumerate(data.top, 1):
                numbers = " · ".join(f"{n} {v}" for n, v in row.details)
                line: list[Any] = [
                    str(i),
                    row.signal.key,
                    data.local(row.signal.time).strftime("%a %b %d, %H:%M"),
                    f"{row.signal.score:,.2f}",
                    Paragraph(escape(numbers), st["cell"]),
                ]
                if contents.outcomes:
                    o = row.outcomes.get(primary) if primary else None
                    line.append(f"{_pct(o.ret)}{' hit' if o.hit else ''}" if o else "-")
                rows.append(line)
            widths = [8 * mm, 26 * mm, 36 * mm, 18 * mm]
            widths.append(width - sum(widths) - (24 * mm if contents.outcomes else 0))
            if contents.outcomes:
                widths.append(24 * mm)
            flow.append(_table(rows, widths, right=(0, 3, 5) if contents.outcomes else (0, 3)))
        else:
            flow.append(Paragraph("No signal fired in this period.", st["note"]))
    if contents.charts and len(data.daily) > 1:
        flow += [Paragraph("Signals per day", st["h2"]), _daily_chart(data, width)]
    if data.movers:
        flow.append(Paragraph("Top movers", st["h2"]))
        rows = [["Key", "First close", "Last close", "Move", "Signals"]]
        rows += [[m.key, _num(m.first), _num(m.last), _pct(m.change), str(m.signals)] for m in data.movers]
        flow.append(_table(rows, [40 * mm, 32 * mm, 32 * mm, 28 * mm, 22 * mm], right=(1, 2, 3, 4)))
    if data.per_key:
        flow.append(Paragraph("By key", st["h2"]))
        rows = [["Key", "Signals", "Best score", "Mean score", "Last signal"]]
        rows += [
            [k.key, str(k.signals), f"{k.best:,.2f}", f"{k.mean:,.2f}", data.local(k.last).strftime("%a %b %d, %H:%M")]
            for k in data.per_key
        ]
        flow.append(_table(rows, [40 * mm, 22 * mm, 26 * mm, 26 * mm, 40 * mm], right=(1, 2, 3)))
    if contents.track_record:
        flow.append(Paragraph("Track record", st["h2"]))
        if data.track:
            rows = [["Horizon", "Signals", "Hit rate", "95% CI", "Mean move", "Random |move|"]]
            rows += [
                [
                    f"{s.horizon} bar{'s' if s.horizon != 1 else ''}",
                    f"{s.count:,}",
                    _pct(s.hit_rate, False),
                    f"{_pct(s.hit_low, False)}-{_pct(s.hit_high, False)}",
                    _pct(s.mean),
                    f"{100 * s.baseline:.2f}%" if math.isfinite(s.baseline) else "-",
                ]
                for s in data.track
            ]
            flow.append(_table(rows, [24 * mm, 22 * mm, 22 * mm, 30 * mm, 26 * mm, 28 * mm], right=(1, 2, 3, 4, 5)))
        else:
            flow.append(Paragraph("No outcome was measured by the end of this period.", st["note"]))
    flow += [
        Spacer(1, 10),
        Paragraph(
            escape(
                " ".join(data.notes) + f" Rendered {data.generated:%Y-%m-%d %H:%M} UTC from the automation's "
                "append-only signal log. Past signals do not promise future ones; nothing here is investment advice."
            ),
            st["note"],
        ),
    ]
    doc.build(flow)
    return out.getvalue()
