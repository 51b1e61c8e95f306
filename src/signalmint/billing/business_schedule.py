"""Sending the weekly business report on its schedule, at most once per week.

The report of a week is due at ``admin.business_report.weekday`` and ``hour`` (in ``tz``) of
the week after it; a process that was down then sends it when it comes back, until the next
week's report is due. Once the figures are computed and the email rendered (a process killed
before that leaves nothing behind, and its restart starts over), the process claims the week in
the store (:func:`signalmint.store.business.claim_mark`) and only then sends: one process wins,
and a restart sees the claim, so a week's report goes out at most once, whatever restarts or
how many workers run. When the SMTP server refuses the message or cannot be reached, nothing
went out, so the claim is dropped and the next check tries again; when the outcome is unknown
(the connection died during the transaction, or the process was killed while sending) the claim
stays: the operator can send that week by hand with ``signalmint business-report --week ... --send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib

from ..accounts.mail import Mailer, mailer_for
from ..config import WEEKDAYS, BusinessReportConfig, Settings
from ..errors import DeliveryError
from ..store import Database
from ..store.business import claim_mark, drop_mark, read_mark, write_mark
from .business_email import business_email
from .business_report import Week, compute, rejected_snapshot, week_of

__all__ = ["Sent", "due_week", "run_business_reports", "send_due", "send_moment", "send_week"]

log = logging.getLogger("signalmint.business_report")


def send_moment(week: Week, config: BusinessReportConfig) -> datetime:
    """When the report of ``week`` is due: ``weekday`` at ``hour`` (in ``tz``) of the week after.

    >>> from signalmint.billing.business_report import parse_week
    >>> cfg = BusinessReportConfig(weekday="mon", hour=8, tz="Europe/Paris")
    >>> send_moment(parse_week("2026-W43", cfg.tz), cfg).isoformat()  # Paris leaves summer time on Oct 25
    '2026-10-26T07:00:00+00:00'
    """
    following = date.fromisocalendar(week.year, week.number, 1) + timedelta(days=7 + WEEKDAYS.index(config.weekday))
    local = datetime(following.year, following.month, following.day, config.hour, tzinfo=ZoneInfo(config.tz))
    return local.astimezone(UTC)


def due_week(now: datetime, config: BusinessReportConfig) -> Week | None:
    """The week whose report is due at ``now`` (the last one, once its moment has come), else None."""
    last = week_of(now, config.tz).previous()
    return last if now >= send_moment(last, config) else None


def next_moment(now: datetime, config: BusinessReportConfig) -> datetime:
    """The next moment a report falls due after ``now``."""
    current = week_of(now, config.tz)
    moment = send_moment(current.previous(), config)
    return moment if moment > now else send_moment(current, config)


@dataclass(frozen=True, slots=True)
class Sent:
    week: str
    status: str  # sent | already | failed | unknown
    message_id: str | None = None
    error: str | None = None


def _nothing_went_out(exc: DeliveryError) -> bool:
    """Whether the server certainly did not take the message: it answered with an error, or no
    connection was made. A connection lost mid-transaction may have delivered it."""
    cause = exc.__cause__
    refused = (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPConnectError)
    return isinstance(cause, (*refused, ConnectionRefusedError))


async def send_week(
    settings: Settings,
    db: Database,
    week: Week,
    now: datetime,
    *,
    mailer: Mailer | None = None,
    force: bool = False,
) -> Sent:
    """Compute and email ``week``'s report to ``admin.email``, once: a week already claimed is
    not sent again unless ``force`` (sending by hand), which sends and marks it all the same."""
    to = settings.admin.email
    if not to:
        return Sent(week.label, "failed", error="admin.email is not set")
    if not force and await db.read(read_mark, week.label) is not None:
        return Sent(week.label, "already")  # the cheap look first: no figures computed for nothing
    figures = await db.read(compute, settings, week, now)
    message = business_email(figures, to, settings.web.title, settings.base_url, sent_at=now)
    claim = {"state": "sending", "claimed_at": now.isoformat()}
    if not await db.write(claim_mark, week.label, claim) and not force:
        return Sent(week.label, "already")  # another process got there while this one computed
    mailer = mailer or mailer_for(settings.email)
    try:
        message_id = await mailer.send(message)
    except DeliveryError as exc:
        if _nothing_went_out(exc):
            await db.write(drop_mark, week.label)
            log.warning("business report %s not sent (will try again): %s", week.label, exc)
            return Sent(week.label, "failed", error=str(exc))
        await db.write(write_mark, week.label, {"state": "unknown", "error": str(exc), "at": now.isoformat()})
        log.error("business report %s: the server may or may not have it (not retried): %s", week.label, exc)
        return Sent(week.label, "unknown", error=str(exc))
    snapshot = await db.read(rejected_snapshot)
    mark: dict[str, Any] = {"state": "sent", "sent_at": now.isoformat(), "message_id": message_id}
    mark["rejected"] = snapshot
    await db.write(write_mark, week.label, mark)
    log.info("business report %s sent to %s (%s)", week.label, to, message_id)
    return Sent(week.label, "sent", message_id)


async def send_due(settings: Settings, db: Database, now: datetime, *, mailer: Mailer | None = None) -> Sent | None:
    """Send the report due at ``now``, if one is and it was not sent; None when none is due."""
    week = due_week(now, settings.admin.business_report)
    if week is None:
        return None
    return await send_week(settings, db, week, now, mailer=mailer)


async def run_business_reports(
    settings: Settings,
    db: Database,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    mailer: Mailer | None = None,
    poll: float = 300.0,
) -> None:
    """Until ``stop``: send each week's report when due (checking at least every ``poll`` seconds,
    and at each due moment). Errors are logged; the loop goes on."""
    if not settings.admin.business_report_on:
        return
    config = settings.admin.business_report
    log.info("business reports to %s, %s at %02d:00 %s", settings.admin.email, config.weekday, config.hour, config.tz)
    while not stop.is_set():
        now = clock()
        try:
            await send_due(settings, db, now, mailer=mailer)
        except Exception:
            log.exception("business report check failed")
        wait = min(poll, max(1.0, (next_moment(clock(), config) - clock()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
