"""The weekly business report as an email: a subject, plain text and email-safe HTML.

The HTML is tables and inline styles only (what email clients keep), in the alert emails'
colours. Its one chart, the deliveries of each day, is a table of bars (cells of a set height
and background), so it shows in every client with images blocked and needs no attachment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from ..accounts.mail import Email
from ..delivery.render import ACCENT, BRAND, FONT, INK, LINE, MUTED
from ..formatting import fmt_money, fmt_num, fmt_pct, fmt_ratio
from ..records import Outcome, Signal
from .analytics import Figures
from .business_report import AutomationWeek, BusinessWeek

__all__ = ["business_email", "render_html", "render_text", "subject"]

GOOD, BAD = "#15803d", "#b91c1c"
CHART_HEIGHT = 64  # px of the tallest bar


def _change(now: int, before: int, currency: str) -> str:
    """``+$120 (+8.00%)`` against the previous week."""
    delta = now - before
    sign = "+" if delta > 0 else "-" if delta < 0 else "±"
    text = f"{sign}{fmt_money(abs(delta), currency)}"
    return f"{text} ({fmt_pct(delta / before)})" if before else text


def _span(bw: BusinessWeek) -> str:
    zone = ZoneInfo(bw.week.tz)
    first = bw.week.start.astimezone(zone)
    last = (bw.week.end - timedelta(seconds=1)).astimezone(zone)
    return f"{first:%a %b} {first.day} to {last:%a %b} {last.day}, {last:%Y} ({bw.week.tz})"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _headline(signal: Signal) -> str:
    ratio = signal.payload.get("ratio")
    if isinstance(ratio, int | float):
        return f"{signal.key} traded {fmt_ratio(ratio)} its usual volume"
    return f"{signal.key}: {signal.kind.replace('_', ' ')}"


def _outcome(outcome: Outcome | None) -> str:
    if outcome is None:
        return "outcome not known yet"
    return f"{fmt_pct(outcome.ret)} after {outcome.horizon} bar{'s' if outcome.horizon != 1 else ''}"


def subject(bw: BusinessWeek, site: str) -> str:
    main = bw.main
    preview = "" if bw.complete else " (so far)"
    mrr = fmt_money(main.mrr, main.currency)
    return (
        f"{site} weekly report {bw.week.label}{preview}: MRR {mrr} ({_change(main.mrr, main.mrr_start, main.currency)})"
    )


def _days(bw: BusinessWeek) -> list[str]:
    zone = ZoneInfo(bw.week.tz)
    return [f"{d.astimezone(zone):%a} {d.astimezone(zone).day}" for d in bw.week.days()[:-1]]


# --- plain text ------------------------------------------------------------------------------------


def _figures_text(f: Figures) -> list[str]:
    c = f.currency
    return [
        f"  MRR {fmt_money(f.mrr, c)} ({_change(f.mrr, f.mrr_start, c)} on the week before, "
        f"{fmt_money(f.mrr_start, c)})",
        f"  paying subscribers {f.paying} (was {f.paying_start}): {f.new} new, {f.churned} churned",
        f"  payments {fmt_money(f.gross, c)} gross, {fmt_money(f.refunds, c)} refunded, "
        f"{fmt_money(f.fees, c)} fees, {fmt_money(f.net, c)} net",
    ]


def render_text(bw: BusinessWeek, site: str, base_url: str) -> str:
    lines = [f"{site}: business report for {bw.week.label}", _span(bw), ""]
    if not bw.complete:
        lines += [f"The week is not over: figures up to {bw.generated_at:%Y-%m-%d %H:%M} UTC.", ""]
    lines.append("Revenue")
    for f in bw.revenue:
        if f is bw.main or not f.empty:
            lines += [f"{f.currency.upper()}:", *_figures_text(f)]
    lines += [f"  sign-ups {bw.signups}", ""]
    d = bw.deliveries
    lines.append(
        f"Deliveries: {bw.sent} sent, {bw.failed} failed, {bw.queued} still queued, "
        f"{d.by_status.get('skipped', 0)} skipped; {d.retried} sent after a retry"
    )
    for channel, (sent, failed) in sorted(d.by_channel.items()):
        lines.append(f"  {channel}: {sent} sent, {failed} failed")
    for day, (sent, failed) in zip(_days(bw), d.daily, strict=False):
        lines.append(f"  {day}: {sent} sent, {failed} failed")
    lines += ["", "Data health"]
    for a in bw.automations:
        lines.append(f"  {a.title} ({a.name}): {_health_text(a)}")
    lines += ["", "Top signals"]
    for a in bw.automations:
        lines.append(f"  {a.title}: {a.signals} signal{'s' if a.signals != 1 else ''} this week")
        for signal, outcome in a.top:
            lines.append(
                f"    - {_headline(signal)}, score {fmt_num(signal.score)}, {signal.time:%Y-%m-%d %H:%M} UTC, "
                f"{_outcome(outcome)}: {base_url.rstrip('/')}/signals/{signal.id}"
            )
    lines += ["", f"Revenue in detail: {base_url.rstrip('/')}/admin/revenue"]
    return "\n".join(lines) + "\n"


def _health_text(a: AutomationWeek) -> str:
    stale = (
        f"stale {len(a.stale)} time{'s' if len(a.stale) != 1 else ''} for {_duration(a.stale_seconds)}"
        if a.stale
        else "never stale"
    )
    total = sum(a.rejected.values())
    if a.rejected_new is not None:
        rejected = f"{a.rejected_new} rows rejected since the last report ({total} in all)"
    else:
        rejected = f"{total} rows rejected in all"
    if a.rejected:
        rejected += " — " + ", ".join(f"{reason} {n}" for reason, n in sorted(a.rejected.items()))
    return f"{stale}; {rejected}"


# --- HTML --------------------------------------------------------------------------------------------

_CELL = f"padding:7px 0;border-bottom:1px solid {LINE};"
_NUM = _CELL + "text-align:right;"


def _section(title: str, body: str) -> str:
    return (
        f'<tr><td style="padding:18px 28px 0;"><h2 style="margin:0 0 8px;font-size:16px;color:{INK};">'
        f"{escape(title)}</h2>{body}</td></tr>"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already; the first column is left-aligned, the others right."""
    th = "".join(
        f'<th style="text-align:{"left" if i == 0 else "right"};padding:6px 0;color:{MUTED};font-weight:600;'
        f'font-size:12px;border-bottom:1px solid {LINE};">{escape(h)}</th>'
        for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL if i == 0 else _NUM}">{cell}</td>' for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'style="font-size:14px;border-collapse:collapse;color:{INK};"><tr>{th}</tr>{body}</table>'
    )


def _kpi(label: str, value: str, note: str, colour: str = MUTED) -> str:
    return (
        f'<td valign="top" style="padding:10px 8px;border:1px solid {LINE};border-radius:6px;width:25%;">'
        f'<div style="font-size:11px;color:{MUTED};text-transform:uppercase;letter-spacing:.04em;">'
        f"{escape(label)}</div>"
        f'<div style="font-size:20px;font-weight:700;color:{INK};margin:4px 0;">{escape(value)}</div>'
        f'<div style="font-size:12px;color:{colour};">{escape(note)}</div></td>'
    )


def _bars(days: Sequence[str], daily: Sequence[tuple[int, int]]) -> str:
    """Sent (teal) and failed (red) deliveries per day as a table of bars."""
    top = max([s + f for s, f in daily] + [1])
    cells, labels = [], []
    for day, (sent, failed) in zip(days, daily, strict=False):
        stack = ""
        for count, colour in ((failed, BAD), (sent, BRAND)):
            height = round(CHART_HEIGHT * count / top)
            if count and height < 2:
                height = 2
            if height:
                stack += (
                    f'<tr><td height="{height}" style="height:{height}px;background:{colour};font-size:0;'
                    f'line-height:0;">&nbsp;</td></tr>'
                )
        bar = (
            f'<table role="presentation" width="70%" cellpadding="0" cellspacing="0" align="center" '
            f'style="margin:0 auto;">{stack}</table>'
            if stack
            else ""
        )
        cells.append(
            f'<td valign="bottom" height="{CHART_HEIGHT}" style="height:{CHART_HEIGHT}px;width:14%;'
            f'border-bottom:1px solid {MUTED};" title="{sent} sent, {failed} failed">{bar}</td>'
        )
        labels.append(
            f'<td style="padding-top:4px;text-align:center;font-size:11px;color:{MUTED};">{escape(day)}<br>'
            f'<span style="color:{INK};">{sent}</span>'
            + (f' <span style="color:{BAD};">/ {failed}</span>' if failed else "")
            + "</td>"
        )
    return (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse;">'
        f"<tr>{''.join(cells)}</tr><tr>{''.join(labels)}</tr></table>"
        f'<div style="font-size:12px;color:{MUTED};margin-top:4px;">Deliveries sent each day '
        f'(<span style="color:{BRAND};">■</span> sent, <span style="color:{BAD};">■</span> failed)</div>'
    )


def render_html(bw: BusinessWeek, site: str, base_url: str) -> str:
    base = base_url.rstrip("/")
    main, c = bw.main, bw.main.currency
    delta = main.mrr - main.mrr_start
    colour = GOOD if delta > 0 else BAD if delta < 0 else MUTED
    title = f"Business report, {bw.week.label}"
    rows = [
        f'<tr><td style="padding:24px 28px 4px;"><div style="font-size:12px;color:{MUTED};letter-spacing:.04em;'
        f'text-transform:uppercase;">{escape(site)}</div><h1 style="margin:6px 0 4px;font-size:22px;color:{INK};">'
        f'{escape(title)}</h1><div style="font-size:13px;color:{MUTED};">{escape(_span(bw))}</div></td></tr>'
    ]
    if not bw.complete:
        rows.append(
            f'<tr><td style="padding:8px 28px 0;font-size:13px;color:{ACCENT};">The week is not over: figures up '
            f"to {bw.generated_at:%Y-%m-%d %H:%M} UTC.</td></tr>"
        )
    kpis = (
        _kpi("MRR", fmt_money(main.mrr, c), _change(main.mrr, main.mrr_start, c) + " on the week", colour)
        + _kpi("Paying", str(main.paying), f"+{main.new} new, −{main.churned} churned")
        + _kpi("Deliveries", fmt_num(bw.sent), f"{bw.failed} failed, {bw.queued} queued", BAD if bw.failed else MUTED)
        + _kpi("Sign-ups", str(bw.signups), "new accounts")
    )
    rows.append(
        '<tr><td style="padding:16px 28px 0;"><table role="presentation" width="100%" cellpadding="0" '
        f'cellspacing="6" style="border-collapse:separate;"><tr>{kpis}</tr></table></td></tr>'
    )
    money_rows = []
    for f in bw.revenue:
        if f is main or not f.empty:
            k = f.currency
            money_rows.append(
                [
                    escape(k.upper()),
                    escape(fmt_money(f.mrr_start, k)),
                    escape(fmt_money(f.mrr, k)),
                    str(f.new),
                    str(f.churned),
                    escape(fmt_money(f.net, k)),
                ]
            )
    rows.append(
        _section(
            "Revenue",
            _table(["Currency", "MRR a week ago", "MRR now", "New", "Churned", "Net payments"], money_rows)
            + f'<p style="font-size:12px;color:{MUTED};margin:6px 0 0;">'
            f'<a href="{escape(base)}/admin/revenue" style="color:{BRAND};">The revenue page</a> has the detail.</p>',
        )
    )
    d = bw.deliveries
    channel_rows = [[escape(ch), str(s), str(f)] for ch, (s, f) in sorted(d.by_channel.items())]
    rows.append(
        _section(
            "Deliveries",
            _bars(_days(bw), d.daily)
            + (_table(["Channel", "Sent", "Failed"], channel_rows) if channel_rows else "")
            + f'<p style="font-size:12px;color:{MUTED};margin:6px 0 0;">{d.retried} sent after a retry; '
            f"{d.by_status.get('skipped', 0)} skipped.</p>",
        )
    )
    health_rows = []
    for a in bw.automations:
        stale = f"{len(a.stale)} × {_duration(a.stale_seconds)}" if a.stale else "never"
        new = "—" if a.rejected_new is None else str(a.rejected_new)
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(a.rejected.items())) or "none"
        health_rows.append(
            [
                escape(a.title),
                f'<span style="color:{BAD if a.stale else INK};">{escape(stale)}</span>',
                escape(new),
                escape(f"{sum(a.rejected.values())} ({reasons})"),
            ]
        )
    rows.append(
        _section(
            "Data health",
            _table(["Automation", "Stale", "Rejected since last report", "Rejected in all"], health_rows),
        )
    )
    top_parts = []
    for a in bw.automations:
        items = "".join(
            f'<tr><td style="{_CELL}"><a href="{escape(base)}/signals/{s.id}" style="color:{BRAND};">'
            f'{escape(_headline(s))}</a><br><span style="font-size:12px;color:{MUTED};">'
            f"{s.time:%a %d %b %H:%M} UTC · score {escape(fmt_num(s.score))}</span></td>"
            f'<td style="{_NUM}font-size:13px;">{escape(_outcome(o))}</td></tr>'
            for s, o in a.top
        )
        count = f"{a.signals} signal{'s' if a.signals != 1 else ''} this week"
        top_parts.append(
            f'<h3 style="margin:12px 0 4px;font-size:14px;color:{INK};">{escape(a.title)} '
            f'<span style="font-weight:400;color:{MUTED};">· {count}</span></h3>'
            + (
                '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
                f'style="font-size:14px;border-collapse:collapse;color:{INK};">{items}</table>'
                if items
                else f'<p style="margin:0;font-size:13px;color:{MUTED};">No signals this week.</p>'
            )
        )
    rows.append(_section("Top signals", "".join(top_parts)))
    rows.append('<tr><td style="padding:0 0 24px;"></td></tr>')
    return _document(title, "".join(rows))


def _document(title: str, body_rows: str) -> str:
    footer = (
        "You receive this report as the operator (admin.email). Turn it off with admin.business_report.enabled: false."
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title></head>"
        f'<body style="margin:0;padding:0;background:#f1f5f9;font-family:{FONT};">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f1f5f9;">'
        '<tr><td align="center" style="padding:24px 12px;">'
        '<table role="presentation" width="640" cellpadding="0" cellspacing="0" style="width:100%;max-width:640px;'
        f'background:#ffffff;border:1px solid {LINE};border-radius:8px;font-family:{FONT};color:{INK};">'
        f"{body_rows}</table>"
        f'<p style="max-width:640px;margin:16px auto 0;font-size:12px;line-height:1.5;color:{MUTED};'
        f'font-family:{FONT};">{escape(footer)}</p></td></tr></table></body></html>'
    )


def business_email(bw: BusinessWeek, to: str, site: str, base_url: str, *, sent_at: datetime | None = None) -> Email:
    """The report addressed to ``to``; ``Message-ID``-free (the mailer makes one)."""
    headers = {"Auto-Submitted": "auto-generated", "X-Signalmint-Report": f"business {bw.week.label}"}
    if sent_at is not None:
        from email.utils import format_datetime

        headers["Date"] = format_datetime(sent_at)
    return Email(
        to=to,
        subject=subject(bw, site),
        text=render_text(bw, site, base_url),
        html=render_html(bw, site, base_url),
        headers=headers,
    )
