"""Revenue: the operator's portfolio page, its CSV, and the same figures from the admin API.

``/admin/revenue`` and ``/admin/revenue.csv`` let in the operator only (as every admin page),
``GET /api/v1/admin/revenue`` admin keys and sessions only. All three take the same period:
``?months=N`` (this month and the N-1 before, to now; 12 by default) or ``?start=&end=``
(``YYYY-MM-DD`` or ISO times in UTC; ``end`` defaults to now and never goes past it).
The figures are defined in :mod:`signalmint.billing.analytics`.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from ...billing.analytics import Figures, RevenueReport, Window, revenue_report
from ...billing.fees import price_warnings
from ...formatting import fmt_money, minor_digits
from ...store.billing import list_payments
from ...store.revenue import load_revenue
from .. import charts
from ..auth import Viewer
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES, require_admin, require_admin_api
from ..core.render import render
from ..openapi import errors

__all__ = ["csv_text", "report_json", "router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(ctx_dependency)]
MAX_MONTHS = 120
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CHOICES = (1, 3, 6, 12, 24)
ATTRIBUTION = (
    "A plan's MRR and payments are split equally among the automations it covers, in whole minor "
    "units, the remainder one unit each to the first automations by name; a payment naming an "
    "automation goes to it whole. Subscriber counts count a subscriber in every automation their plan covers."
)
Months = Annotated[int | None, Query(ge=1, le=MAX_MONTHS, description="this month and the N-1 before")]
Start = Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD or an ISO time (UTC)")]
End = Annotated[str | None, Query(max_length=40, description="default: now; never later than now")]


# --- the period -------------------------------------------------------------------------------


def _moment(text: str, name: str) -> datetime:
    try:
        found = datetime.fromisoformat(text.strip()) if "T" in text else None
        found = found or datetime.combine(date.fromisoformat(text.strip()), time(0))
    except ValueError:
        raise HTTPException(422, f"{name}: “{text[:40]}” is not a date: use YYYY-MM-DD") from None
    found = found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
    if found < EARLIEST:
        raise HTTPException(422, f"{name}: give a date from 2000 on")
    return found


def period(now: datetime, months: int | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """``[start, end)`` from the query, or a 422 saying what to write instead."""
    if months is not None and (start or end):
        raise HTTPException(422, "give months, or start (and end), not both")
    if not start:
        if end:
            raise HTTPException(422, "end needs a start (YYYY-MM-DD)")
        back = (months or 12) - 1
        year, month = divmod(now.year * 12 + now.month - 1 - back, 12)
        return datetime(year, month + 1, 1, tzinfo=UTC), now
    first, last = _moment(start, "start"), min(_moment(end, "end") if end else now, now)
    if first >= last:
        raise HTTPException(422, "start must come before end, and before now")
    if last - first > timedelta(days=MAX_MONTHS * 31):
        raise HTTPException(422, f"a period of at most {MAX_MONTHS} months")
    return first, last


def _report(ctx: AppContext, months: int | None, start: str | None, end: str | None) -> RevenueReport:
    now = datetime.now(UTC)
    first, last = period(now, months, start, end)
    currency = ctx.settings.billing.currency
    data = ctx.db.read_sync(
        load_revenue, first, last, automations=ctx.automation_names(), now=now, credit_currency=currency
    )
    return revenue_report(data, first, last)


# --- JSON and CSV (one flattening, so both always agree) ----------------------------------------

FIELDS = (
    "currency", "mrr", "arr", "mrr_start", "paying", "paying_start", "new", "churned", "churn_rate", "arpu",
    "trials_ended", "trials_converted", "trial_conversion", "gross", "refunds", "fees", "net",
    "paid_subscriptions", "paid_credits", "paid_tips", "paid_manual", "credits_sold", "credits_consumed",
)  # fmt: skip


def figures_json(figures: Figures, *, plans: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(figures, name)
        out[name] = round(value, 4) if isinstance(value, float) else value
    if plans:
        out["by_plan"] = [
            {"plan": p.plan_id, "subscribers": p.subscribers, "paying": p.paying, "trialing": p.trialing, "mrr": p.mrr}
            for p in figures.by_plan
        ]
    return out


def _window_json(window: Window, *, plans: bool) -> dict[str, Any]:
    def each(rows: tuple[Figures, ...]) -> list[dict[str, Any]]:
        return [figures_json(f, plans=plans) for f in rows]

    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "total": each(window.total),
        "automations": [{"name": name, "figures": each(rows)} for name, rows in window.automations],
        "unattributed": each(window.unattributed) if window.unattributed is not None else None,
    }


def report_json(report: RevenueReport) -> dict[str, Any]:
    """The report as the API returns it; money in minor units, credits in micro-units."""
    return {
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "step": report.step,
        "currencies": list(report.currencies),
        "credit_currency": report.credit_currency,
        "attribution": ATTRIBUTION,
        "period": _window_json(report.period, plans=True),
        "series": [_window_json(w, plans=False) for w in report.series],
    }


def _safe(value: str) -> str:
    """No spreadsheet formulas (CSV injection): a text cell may not start with = + - @."""
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value


def csv_text(report: RevenueReport) -> str:
    """One row per window, scope and currency: the period first, then the series."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["window", "start", "end", "scope", "automation", *FIELDS])
    windows = [("period", report.period), *((report.step, w) for w in report.series)]
    for kind, window in windows:
        scopes = [("total", "", window.total), *(("automation", n, rows) for n, rows in window.automations)]
        if window.unattributed is not None:
            scopes.append(("unattributed", "", window.unattributed))
        for scope, name, rows in scopes:
            for figures in rows:
                values = figures_json(figures, plans=False)
                cells = ["" if values[f] is None else str(values[f]) for f in FIELDS]
                cells[0] = _safe(cells[0])
                writer.writerow([kind, window.start.isoformat(), window.end.isoformat(), scope, _safe(name), *cells])
    return out.getvalue()


# --- routes -------------------------------------------------------------------------------------


@router.get("/api/v1/admin/revenue", tags=["admin"], responses={**RESPONSES, **errors(422)})
def revenue_api(
    ctx: Ctx,
    admin: Annotated[Viewer, Depends(require_admin_api)],
    months: Months = None,
    start: Start = None,
    end: End = None,
) -> dict[str, Any]:
    """Revenue figures over a period, in total and per automation, per currency, with a daily or
    monthly series: MRR, ARR, paying subscribers, new, churned, churn rate, ARPU, trial
    conversion, payments (gross, refunds, fees, net), credits sold and consumed, subscribers by plan."""
    return report_json(_report(ctx, months, start, end))


@router.get("/admin/revenue.csv", include_in_schema=False)
def revenue_csv(
    ctx: Ctx,
    admin: Annotated[Viewer, Depends(require_admin)],
    months: Months = None,
    start: Start = None,
    end: End = None,
) -> Response:
    report = _report(ctx, months, start, end)
    name = f"revenue-{report.start:%Y-%m-%d}-{report.end:%Y-%m-%d}.csv"
    return Response(
        csv_text(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def _major(amount: int, currency: str) -> float:
    return float(amount) / float(10 ** minor_digits(currency))


def _credit_money(micro: int | None, currency: str) -> str:
    """Credits (micro-units of the credit currency) as money, rounded down to a minor unit."""
    return fmt_money(None if micro is None else micro * 10 ** minor_digits(currency) // 1_000_000, currency)


def _charts(report: RevenueReport, currency: str) -> dict[str, str]:
    index = report.currencies.index(currency)
    times = np.array([w.end.replace(tzinfo=None) for w in report.series], dtype="datetime64[ns]")
    mrr = [_major(w.total[index].mrr, currency) for w in report.series]
    paying = [float(w.total[index].paying) for w in report.series]
    label = currency.upper()
    scale = 10 ** minor_digits(currency)

    def money(value: float) -> str:
        return fmt_money(round(value * scale), currency)

    return {
        "mrr": charts.metric_chart(
            times, mrr, title=f"Monthly recurring revenue ({label}), at the end of each {report.step}", unit=money
        ),
        "paying": charts.metric_chart(
            times,
            paying,
            title=f"Paying subscribers ({label} plans), at the end of each {report.step}",
            bars=True,
            whole=True,
        ),
    }


def _sparklines(report: RevenueReport) -> dict[tuple[str, str], str]:
    out = {}
    for i, currency in enumerate(report.currencies):
        for j, (name, _) in enumerate(report.period.automations):
            values = [_major(w.automations[j][1][i].mrr, currency) for w in report.series]
            out[name, currency] = charts.sparkline(values, title=f"MRR of {name} ({currency.upper()})")
    return out


@router.get("/admin/revenue", response_class=HTMLResponse, include_in_schema=False)
def revenue_page(
    request: Request,
    ctx: Ctx,
    admin: Annotated[Viewer, Depends(require_admin)],
    months: Months = None,
    start: Start = None,
    end: End = None,
) -> HTMLResponse:
    report = _report(ctx, months, start, end)
    shown = [i for i, f in enumerate(report.period.total) if i == 0 or not f.empty]

    recent = ctx.db.read_sync(list_payments, limit=25)
    warnings = price_warnings(ctx.access.current(), ctx.settings.billing.fees)
    params = {k: v for k, v in {"months": months, "start": start, "end": end}.items() if v}
    return render(
        request,
        "admin_revenue.html",
        nav_active="admin",
        viewer=admin,
        csrf=admin.csrf(ctx.pepper),
        tab="revenue",
        report=report,
        shown=shown,
        charts={report.currencies[i]: _charts(report, report.currencies[i]) for i in shown},
        sparklines=_sparklines(report),
        selected=months or (None if start else 12),
        choices=CHOICES,
        start_value=start or "",
        end_value=end or "",
        csv_url="/admin/revenue.csv" + (f"?{urlencode(params)}" if params else ""),
        attribution=ATTRIBUTION,
        credit_money=_credit_money,
        payments=recent,
        fee_warnings=warnings,
        test_mode=ctx.billing is not None and ctx.billing.test_mode,
    )
