"""The report sender: claims due report deliveries, sends them through the channels, records each attempt.

A loop of its own beside the signal worker (started by :func:`signalmint.delivery.runner.run_worker`
when reports are configured), with the same guarantees: rows are leased
(:func:`~signalmint.store.report_outbox.claim_reports`), sent outside any transaction through the
very channel classes the signal worker uses (the ``signalmint.channels`` entry points, one shared
:class:`~signalmint.delivery.channels.base.ChannelContext`: the SMTP pool, the bot's HTTP client,
the webhook pool and its SSRF guard), and their outcomes recorded. A sender killed mid-send leaves
its leases to expire; the rows go out again with the same idempotency id (at least once).
Retries follow the Standard Webhooks schedule (:func:`~signalmint.delivery.worker.backoff`); a
permanent error, or the last attempt, makes a dead letter with its reason.

What each channel receives (one message per report and channel kind, built once however many
subscribers get it):

* email: the report's email-safe HTML (its charts as inline ``cid:`` images, since mail clients
  block ``data:`` ones) with a plain-text part, and the PDF attached;
* Telegram: the PDF as a document (``sendDocument``) captioned with the title, the top signals and
  the link;
* webhook: a signed ``report.published`` event with the link, the PDF's link and the summary;
* Apprise and other channels: the title, the top signals and the link.

Entitlement is checked again when sending: a row enqueued for a plan's audience is skipped when
the subscription no longer entitles, an endpoint paused or removed since gets nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..access import is_entitled
from ..config import Settings
from ..errors import DeliveryError
from ..records import DeliveryOutcome as Outcome
from ..records import Endpoint, Report, ReportSignal, Subscriber, Subscription
from ..store import Connection, Database
from ..store.accounts import open_subscriptions_of, subscribers_by_id
from ..store.outbox import list_endpoints, set_endpoint_status
from ..store.plans import load_plans
from ..store.report_outbox import ReportDelivery, claim_reports, record_reports
from ..store.reports import get_report
from .channels.base import Attachment, Channel, ChannelContext, Message, Receipt
from .compose import unsubscribe_token
from .record import backoff
from .send import ChannelFactory, default_channel_factory

__all__ = [
    "PreparedReport",
    "ReportSender",
    "audience_plans",
    "prepare_report",
    "report_link",
    "report_message",
    "report_payload",
    "report_text",
]

log = logging.getLogger("signalmint.delivery.reports")
Hook = Callable[[str, ReportDelivery], None]  # (point, row): "claimed", "sending", "sent"
_DATA_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
_KEEP_REPORTS = 8  # reports (with their PDF) kept in memory between rounds


def report_link(settings: Settings, report: Report) -> str:
    """The report's page (the address :func:`signalmint.reports.scheduler.report_url` gives: delivery
    and reports are sibling stages, neither imports the other)."""
    path = f"/automations/{quote(report.automation)}/reports/{quote(report.name)}/{quote(report.period_key)}"
    return settings.base_url.rstrip("/") + path


def audience_plans(settings: Settings, automation: str, name: str) -> frozenset[str] | None:
    """The plans whose subscribers receive this definition's reports (None: the definition is gone)."""
    for candidate in settings.automations:
        if candidate.name == automation:
            for spec in candidate.reports:
                if spec.name == name:
                    return frozenset(spec.audience.plans)
    return None


def report_text(report: Report, link: str) -> tuple[str, str]:
    """(subject, plain text) of a report's message: the title, its top signals, the link.

    >>> from signalmint.records import ReportSignal
    >>> at = datetime(2026, 11, 24, tzinfo=UTC)
    >>> r = Report(1, "stocks", "weekly", "Stocks: weekly report", "2026-W48", at, at, at, signal_count=3,
    ...            top=(ReportSignal(9, "NVDA", at, "volume_spike", 31.5),))
    >>> print(report_text(r, "https://sm.example/r")[1])
    Stocks: weekly report (2026-W48)
    3 signals. Top: NVDA 31.5
    <BLANKLINE>
    Read it: https://sm.example/r
    """
    subject = f"{report.title} ({report.period_key})"
    top = ", ".join(f"{s.key} {s.score:.3g}" for s in report.top[:5])
    count = f"{report.signal_count} signal{'' if report.signal_count == 1 else 's'}"
    lines = [subject, f"{count}. Top: {top}" if top else f"{count}."]
    return subject, "\n".join(lines) + f"\n\nRead it: {link}"


def report_payload(report: Report, link: str, at: datetime) -> dict[str, Any]:
    """The webhook event: ``report.published`` with the links and the summary."""
    return {
        "type": "report.published",
        "version": 1,
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "id": report.id,
            "automation": report.automation,
            "report": report.name,
            "title": report.title,
            "period": {
                "key": report.period_key,
                "start": report.period_start.isoformat().replace("+00:00", "Z"),
                "end": report.period_end.isoformat().replace("+00:00", "Z"),
            },
            "url": link,
            "pdf_url": link + ".pdf",
            "pdf_size": report.pdf_size or len(report.pdf),
            "signal_count": report.signal_count,
            "top": [_top(s) for s in report.top],
        },
    }


def _top(s: ReportSignal) -> dict[str, Any]:
    at = s.time.isoformat().replace("+00:00", "Z")
    return {"signal_id": s.signal_id, "key": s.key, "time": at, "kind": s.kind, "score": s.score}


def _inline_images(html: str, report_id: int) -> tuple[str, tuple[Attachment, ...]]:
    """The email HTML with each ``data:`` PNG replaced by a ``cid:`` reference, and those images."""
    images: list[Attachment] = []

    def swap(match: re.Match[str]) -> str:
        cid = f"report{report_id}-chart{len(images) + 1}@signalmint"
        images.append(Attachment(f"chart{len(images) + 1}.png", "image/png", base64.b64decode(match[1]), cid))
        return f'src="cid:{cid}"'

    return _DATA_PNG.sub(swap, html), tuple(images)


@dataclass(frozen=True, slots=True)
class PreparedReport:
    """What every message of one report shares (built once per report)."""

    report: Report
    link: str
    subject: str
    text: str
    html: str
    files: tuple[Attachment, ...]  # the PDF, then the inline charts
    payload: dict[str, Any]
    body: bytes


def prepare_report(report: Report, link: str, at: datetime) -> PreparedReport:
    subject, text = report_text(report, link)
    html, images = _inline_images(report.email_html, report.id)
    pdf = Attachment(f"{report.filename}.pdf", "application/pdf", report.pdf)
    payload = report_payload(report, link, at)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return PreparedReport(report, link, subject, text, html, (pdf, *images), payload, body)


def report_message(
    prepared: PreparedReport, row: ReportDelivery, endpoint: Endpoint, unsubscribe: str | None
) -> Message:
    """One row's message: the email gets the HTML, the charts and the PDF; others the text (and the PDF)."""
    email = endpoint.channel == "email"
    return Message(
        idempotency_id=row.idempotency_id,
        subject=prepared.subject,
        text=prepared.text,
        html=prepared.html if email else None,
        payload=prepared.payload,
        body=prepared.body,
        created_at=prepared.report.created_at,
        unsubscribe_url=unsubscribe,
        attachments=prepared.files if email else prepared.files[:1],
    )


class ReportSender:
    """Sends the report outbox: ``run_once()`` one batch, ``run(stop)`` until stopped."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        context: ChannelContext,
        pepper: bytes,
        *,
        owner: str | None = None,
        batch: int = 500,
        concurrency: int = 64,
        lease: timedelta = timedelta(seconds=120),
        channel_factory: ChannelFactory = default_channel_factory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hook: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.context = context
        self.pepper = pepper
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:reports"
        self.batch = batch
        self.concurrency = concurrency
        self.lease = lease
        self.channel_factory = channel_factory
        self.clock = clock
        self.hook = hook
        self.sent = 0
        self.failed = 0
        self._channels: dict[int, Channel] = {}
        self._reports: OrderedDict[int, PreparedReport | None] = OrderedDict()
        self._endpoint_changes: dict[int, tuple[str, str]] = {}

    async def run_once(self) -> int:
        """Claim, send and record one batch; the number of rows handled."""
        now = self.clock()
        claimed = await self.db.write(claim_reports, self.owner, now, lease=self.lease, limit=self.batch)
        if not claimed:
            return 0
        for row in claimed:
            self._at("claimed", row)
        endpoints, views = await self.db.read(self._load, claimed, now)
        queue = iter(claimed)
        outcomes: list[Outcome] = []

        async def lane() -> None:  # at most `concurrency` sends in flight
            for row in queue:
                outcomes.append(await self._deliver(row, endpoints, views, now))

        await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(claimed)))))
        await self.db.write(record_reports, outcomes, self.clock(), self.owner)
        for endpoint_id, (status, reason) in self._endpoint_changes.items():  # a 410, a blocked bot, a bounce
            await self.db.write(set_endpoint_status, endpoint_id, status, reason, self.clock())
            self._channels.pop(endpoint_id, None)
        self._endpoint_changes.clear()
        return len(claimed)

    async def run(self, stop: asyncio.Event, *, idle: float = 1.0) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("report delivery round failed; trying again")
                handled = 0
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)

    def _at(self, point: str, row: ReportDelivery) -> None:
        if self.hook is not None:
            self.hook(point, row)

    # -- loading ---------------------------------------------------------------------------

    def _load(
        self, conn: Connection, claimed: list[ReportDelivery], now: datetime
    ) -> tuple[dict[int, Endpoint], dict[int, str | None]]:
        """The endpoints, each new report once, and why each row may not be sent (None: it may)."""
        needed = {r.report_id for r in claimed}
        for report_id in sorted(needed - set(self._reports)):
            report = get_report(conn, report_id, content=True)
            link = report_link(self.settings, report) if report is not None else ""
            self._reports[report_id] = prepare_report(report, link, now) if report is not None else None
        for report_id in list(self._reports):  # the oldest go first; never one this batch sends
            if len(self._reports) <= _KEEP_REPORTS:
                break
            if report_id not in needed:
                del self._reports[report_id]
        endpoints = {e.id: e for e in list_endpoints(conn, ids=sorted({r.endpoint_id for r in claimed}))}
        audience = [r for r in claimed if r.reason == "plan"]
        ids = sorted({r.subscriber_id for r in audience})
        people, holdings = subscribers_by_id(conn, ids), open_subscriptions_of(conn, ids)
        plans = load_plans(conn) if audience else {}
        views: dict[int, str | None] = {}
        for row in claimed:
            views[row.id] = self._why_not(row, endpoints.get(row.endpoint_id), people, holdings, plans, now)
        return endpoints, views

    def _why_not(
        self,
        row: ReportDelivery,
        endpoint: Endpoint | None,
        people: dict[int, Subscriber],
        holdings: dict[int, Subscription],
        plans: dict[Any, Any],
        now: datetime,
    ) -> str | None:
        prepared = self._reports.get(row.report_id)
        if prepared is None or endpoint is None:
            return "the report or the endpoint no longer exists"
        if endpoint.status != "active":
            return f"the endpoint is {endpoint.status}"
        if row.reason != "plan":
            return None  # bought: the purchase stands
        audience = audience_plans(self.settings, prepared.report.automation, prepared.report.name)
        subscription = holdings.get(row.subscriber_id)
        subscriber = people.get(row.subscriber_id)
        plan = plans.get((subscription.plan_id, subscription.plan_version)) if subscription else None
        if (  # as reports.access.in_audience decides
            audience is None or plan is None or subscription is None or subscriber is None
            or plan.id not in audience or not is_entitled(subscription, plan, subscriber, now)
        ):  # fmt: skip
            return "not entitled to this report any more"
        if endpoint.channel not in plan.channels:
            return "the plan no longer includes this channel"
        return None

    # -- sending ---------------------------------------------------------------------------

    async def _deliver(
        self, row: ReportDelivery, endpoints: dict[int, Endpoint], views: dict[int, str | None], now: datetime
    ) -> Outcome:
        why = views.get(row.id)
        if why is not None:
            return Outcome(row.id, "skipped", error=why)
        endpoint = endpoints[row.endpoint_id]
        prepared = self._reports.get(row.report_id)  # loaded for this batch
        if prepared is None:
            return Outcome(row.id, "skipped", error="the report no longer exists")
        unsubscribe = None
        if endpoint.channel == "email":
            token = unsubscribe_token(endpoint.id, self.pepper)
            unsubscribe = f"{self.settings.base_url.rstrip('/')}/unsubscribe/{endpoint.id}/{token}"
        message = report_message(prepared, row, endpoint, unsubscribe)
        self._at("sending", row)
        try:
            channel = self._channels.get(endpoint.id)
            if channel is None:
                channel = self._channels[endpoint.id] = self.channel_factory(endpoint, self.context)
            receipt: Receipt = await channel.send(message)
        except DeliveryError as exc:
            self.failed += 1
            if getattr(exc, "disable_endpoint", False):
                self._endpoint_changes[endpoint.id] = ("disabled", str(exc))
            if getattr(exc, "pause_endpoint", False):
                self._endpoint_changes[endpoint.id] = ("paused", str(exc))
            return self._failure(row, exc)
        except Exception as exc:  # a channel bug must not lose the delivery: retry it
            log.exception("channel %s crashed sending a report", endpoint.channel)
            self.failed += 1
            return self._failure(row, DeliveryError(f"{type(exc).__name__}: {exc}"))
        self.sent += 1
        self._at("sent", row)
        stored = {"channel": receipt.channel, "at": receipt.at.isoformat(), "id": receipt.provider_id,
                  "detail": receipt.detail}  # fmt: skip
        return Outcome(row.id, "sent", receipt=stored)

    def _failure(self, row: ReportDelivery, exc: DeliveryError) -> Outcome:
        if exc.permanent:
            return Outcome(row.id, "dead", error=f"permanent: {exc}")
        wait = backoff(row.attempts, exc.retry_after)
        if wait is None:
            return Outcome(row.id, "dead", error=f"gave up after {row.attempts} attempts: {exc}")
        return Outcome(row.id, "pending", error=str(exc), next_attempt_at=self.clock() + timedelta(seconds=wait))
