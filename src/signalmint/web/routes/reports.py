"""Premium reports on the web: an archive per automation, one page per report (gated), its PDF,
buying one with credits, and the subscriber's Reports tab.

A report page shows the whole report to whoever may read it (:mod:`signalmint.reports.access`:
the operator, the audience's subscribers, buyers, everyone for the public sample); anyone else
sees a teaser (title, period, counts, the keys of the top signals without their numbers) and,
signed in, a form that buys it with credits. The purchase debits the wallet once (ledger reason
``report``, ref ``report:ID:SUBSCRIBER``), so a double click or a retried POST pays once; the
form carries the session's CSRF token and answers with a redirect to the report, readable at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, Response

from ...billing.credits import balance, buy_report, minor_to_micros
from ...config import AutomationConfig
from ...config.reports import ReportConfig
from ...records import Report
from ...reports.access import in_audience, may_read, sample_key
from ...reports.publish import enqueue_purchase
from ...store import Connection
from ...store.reports import find_report, list_reports, purchased_ids
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx, get_viewer
from ..core.deps import require_subscriber
from ..core.forms import check_csrf, read_form
from ..core.render import redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]
Name = Annotated[str, Path(max_length=64)]
Key = Annotated[str, Path(max_length=32)]
ARCHIVE = 200  # reports listed per definition


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored report as one viewer sees it in a list."""

    report: Report
    spec: ReportConfig
    readable: bool
    why: str  # sample | plan | bought | operator | locked
    price: int | None  # micro-units of credit, when it is for sale to this viewer
    href: str


def _href(report: Report) -> str:
    return f"/automations/{quote(report.automation)}/reports/{quote(report.name)}/{quote(report.period_key)}"


def _automation(ctx: AppContext, name: str) -> AutomationConfig:
    for automation in ctx.settings.automations:
        if automation.name == name:
            return automation
    raise HTTPException(404, f"There is no automation {name!r}.")


def _spec(automation: AutomationConfig, report: str) -> ReportConfig:
    for spec in automation.reports:
        if spec.name == report:
            return spec
    raise HTTPException(404, f"{automation.display_title} has no report {report!r}.")


def _price(ctx: AppContext, spec: ReportConfig) -> int | None:
    price = spec.audience.price
    return minor_to_micros(price, ctx.settings.billing.currency) if price else None


def _entry(
    ctx: AppContext, viewer: Viewer, spec: ReportConfig, report: Report, sample: str | None, bought: set[int]
) -> Entry:
    now = datetime.now(UTC)
    audience = viewer.kind == "subscriber" and in_audience(
        spec, viewer.plan, viewer.subscription, viewer.subscriber, now
    )
    owned = report.id in bought
    readable = may_read(report, admin=viewer.is_admin, audience=audience, bought=owned, sample=sample)
    why = (
        "operator"
        if viewer.is_admin
        else "plan"
        if audience
        else "bought"
        if owned
        else "sample"
        if report.period_key == sample
        else "locked"
    )
    return Entry(report, spec, readable, why, None if readable else _price(ctx, spec), _href(report))


def _bought(conn: Connection, viewer: Viewer) -> set[int]:
    return purchased_ids(conn, viewer.subscriber.id) if viewer.subscriber is not None else set()


def _archive(conn: Connection, ctx: AppContext, viewer: Viewer, automation: AutomationConfig) -> list[Entry]:
    bought = _bought(conn, viewer)
    out: list[Entry] = []
    for spec in automation.reports:
        stored = list_reports(conn, automation.name, name=spec.name, limit=ARCHIVE)
        sample = sample_key(spec, stored)
        out += [_entry(ctx, viewer, spec, r, sample, bought) for r in stored]
    return sorted(out, key=lambda e: (e.report.period_end, e.report.id), reverse=True)


def _plans_named(ctx: AppContext, spec: ReportConfig) -> list[Any]:
    return [p for p in ctx.access.current() if p.id in spec.audience.plans and p.public]


@router.get("/automations/{name}/reports", response_class=HTMLResponse)
def archive(name: Name, request: Request, ctx: Ctx, viewer: Who) -> HTMLResponse:
    automation = _automation(ctx, name)
    entries = ctx.db.read_sync(_archive, ctx, viewer, automation)
    return render(
        request,
        "reports_archive.html",
        nav_active="automation",
        automation=automation,
        entries=entries,
        specs=automation.reports,
        plans={spec.name: _plans_named(ctx, spec) for spec in automation.reports},
        currency=ctx.settings.billing.currency,
    )


def _load(
    conn: Connection, ctx: AppContext, viewer: Viewer, automation: AutomationConfig, spec: ReportConfig, key: str
) -> tuple[Entry, Report]:
    found = find_report(conn, automation.name, spec.name, key, content=False)
    if found is None:
        raise HTTPException(404, f"No {spec.name} report for {key!r} yet: the archive lists the stored ones.")
    stored = list_reports(conn, automation.name, name=spec.name, limit=100_000)
    entry = _entry(ctx, viewer, spec, found, sample_key(spec, stored), _bought(conn, viewer))
    if entry.readable:
        full = find_report(conn, automation.name, spec.name, key, content=True)
        assert full is not None
        return entry, full
    return entry, found


def _page(
    request: Request,
    ctx: AppContext,
    viewer: Viewer,
    name: str,
    report: str,
    key: str,
    *,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    automation = _automation(ctx, name)
    spec = _spec(automation, report)
    entry, full = ctx.db.read_sync(_load, ctx, viewer, automation, spec, key)
    wallet = ctx.db.read_sync(balance, viewer.subscriber.id) if viewer.subscriber is not None else None
    return render(
        request,
        "report_page.html",
        status=status,
        nav_active="automation",
        automation=automation,
        spec=spec,
        entry=entry,
        report=full,
        wallet=wallet,
        currency=ctx.settings.billing.currency,
        span=_span(spec, full),
        plans=_plans_named(ctx, spec),
        csrf=viewer.csrf(ctx.pepper),
        signed_in=viewer.kind == "subscriber" and viewer.session is not None,
        **extra,
    )


def _span(spec: ReportConfig, report: Report) -> str:
    """The period in words, in the report's time zone, its last day included: ``Nov 23 – Nov 29, 2026``."""
    start = report.period_start.astimezone(spec.zone)
    last = (report.period_end - timedelta(microseconds=1)).astimezone(spec.zone)
    if spec.period == "run":
        return f"{start:%b %d, %H:%M} – {report.period_end.astimezone(spec.zone):%b %d, %Y %H:%M} ({spec.timezone})"
    if start.date() == last.date():
        return f"{start:%b %d, %Y} ({spec.timezone})"
    return f"{start:%b %d} – {last:%b %d, %Y} ({spec.timezone})"


@router.get("/automations/{name}/reports/{report}/{key}.pdf")
def report_pdf(name: Name, report: Name, key: Key, ctx: Ctx, viewer: Who) -> Response:
    automation = _automation(ctx, name)
    spec = _spec(automation, report)
    entry, full = ctx.db.read_sync(_load, ctx, viewer, automation, spec, key)
    if not entry.readable:
        raise HTTPException(403, "This report's PDF is for its subscribers and buyers: open its page to get it.")
    return Response(
        full.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{full.filename}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/automations/{name}/reports/{report}/{key}", response_class=HTMLResponse)
def report_page(
    name: Name, report: Name, key: Key, request: Request, ctx: Ctx, viewer: Who, bought: str = ""
) -> HTMLResponse:
    return _page(request, ctx, viewer, name, report, key, just_bought=bought == "1")


@router.post("/automations/{name}/reports/{report}/{key}/buy")
async def buy(name: Name, report: Name, key: Key, request: Request, ctx: Ctx) -> Response:
    viewer = resolve_viewer(request)
    form = await read_form(request, "csrf")
    automation = _automation(ctx, name)
    spec = _spec(automation, report)
    here = f"/automations/{quote(name)}/reports/{quote(report)}/{quote(key)}"
    if viewer.kind != "subscriber" or viewer.subscriber is None or viewer.session is None:
        raise HTTPException(303, "Sign in to buy a report.", headers={"Location": "/login"})
    check_csrf(viewer, ctx, form["csrf"])
    entry, _ = await ctx.db.read(_load, ctx, viewer, automation, spec, key)
    if entry.readable:
        return redirect(here)  # included in the plan, bought before, or the sample: nothing to pay
    if entry.price is None:
        raise HTTPException(400, "This report is not for sale: it comes with the plans listed on its page.")
    outcome = await ctx.db.write(_buy, ctx, entry.report.id, viewer.subscriber.id, entry.price)
    if outcome == "insufficient":
        return _page(request, ctx, viewer, name, report, key, status=402, short=True)
    return redirect(here + "?bought=1")


def _buy(conn: Connection, ctx: AppContext, report_id: int, subscriber_id: int, price: int) -> str:
    """Pay for a report and, in the same transaction, queue it to the buyer's channels."""
    now = datetime.now(UTC)
    outcome = buy_report(conn, report_id, subscriber_id, price, now)
    if outcome == "bought":
        enqueue_purchase(conn, ctx.settings, report_id, subscriber_id, now)
    return outcome


def _mine(conn: Connection, ctx: AppContext, viewer: Viewer) -> list[Entry]:
    bought = _bought(conn, viewer)
    out: list[Entry] = []
    for automation in ctx.settings.automations:
        for spec in automation.reports:
            stored = list_reports(conn, automation.name, name=spec.name, limit=ARCHIVE)
            sample = sample_key(spec, stored)
            out += [_entry(ctx, viewer, spec, r, sample, bought) for r in stored[:24]]
    return sorted(out, key=lambda e: (e.report.period_end, e.report.id), reverse=True)


@router.get("/dashboard/reports", response_class=HTMLResponse)
def dashboard_reports(request: Request, ctx: Ctx, me: Annotated[Viewer, Depends(require_subscriber)]) -> HTMLResponse:
    entries = ctx.db.read_sync(_mine, ctx, me)
    assert me.subscriber is not None
    titles = {a.name: a.display_title for a in ctx.settings.automations}
    return render(
        request,
        "dashboard_reports.html",
        nav_active="dashboard",
        entries=entries,
        titles=titles,
        wallet=ctx.db.read_sync(balance, me.subscriber.id),
        currency=ctx.settings.billing.currency,
        subscriber=me.subscriber,
        csrf=me.csrf(ctx.pepper),
    )
