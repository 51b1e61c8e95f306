"""Running a delivery worker: its shared resources (HTTP session, SMTP, bot), its loop, the
report sender's loop beside it (when reports are configured), sharing those resources, and on
PostgreSQL the ``LISTEN`` connection that wakes it when due rows commit
(:mod:`~signalmint.delivery.wake`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..accounts.service import server_pepper
from ..config import Settings
from ..store import Database
from .channels import email, telegram
from .channels.telegram import run_polling, telegram_bot
from .context import channel_context
from .report_outbox import ReportSender
from .telegram_commands import StoreCommands
from .wake import OutboxListener
from .worker import Worker

__all__ = ["channel_context", "run_worker"]

log = logging.getLogger("signalmint.delivery")


async def run_worker(
    settings: Settings, db: Database, stop: asyncio.Event, *, wake: asyncio.Event | None = None
) -> Worker:
    """Send deliveries until ``stop`` is set; the in-flight round finishes first. An idle worker
    looks for due rows every ``delivery.poll``, and at once when ``wake`` is set (the engine of
    the same process sets it on its commits) or, on PostgreSQL, when its ``LISTEN`` connection
    hears that due rows committed."""
    wake = wake or asyncio.Event()
    context = channel_context(settings)
    worker = Worker(
        settings,
        db,
        context,
        server_pepper(settings, db),
        batch=settings.delivery.batch,
        concurrency=settings.delivery.concurrency,
        lease=settings.delivery.lease,
    )
    log.info("delivery worker %s started", worker.owner)
    bot = None
    if settings.telegram.token:  # the same process answers the bot's commands
        commands = StoreCommands(db, worker.pepper, base_url=settings.base_url, tips=settings.billing.tips)
        bot = asyncio.create_task(run_polling(telegram_bot(context, settings.telegram.token), commands, stop))
    listener = None
    if db.engine.dialect.name == "postgresql":
        listener = asyncio.create_task(OutboxListener(db, wake).run())
    report_sender = None
    if any(a.reports for a in settings.automations):  # premium reports: their own outbox and loop
        sender = ReportSender(settings, db, context, worker.pepper, concurrency=settings.delivery.concurrency)
        report_sender = asyncio.create_task(sender.run(stop))
    try:
        await worker.run(stop, idle=settings.delivery.poll.total_seconds(), wake=wake)
        if bot is not None:
            await asyncio.wait({bot}, timeout=5)
        if report_sender is not None:
            await asyncio.wait({report_sender}, timeout=30)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if report_sender is not None and not report_sender.done():
            report_sender.cancel()
        if bot is not None and not bot.done():
            bot.cancel()
        for close in (email.close, telegram.close):  # the SMTP pool and the bot's client, if opened
            with contextlib.suppress(Exception):
                await close(context)
        with contextlib.suppress(Exception):
            await context.http.close()
        log.info("delivery worker %s stopped: %d sent, %d failed attempts", worker.owner, worker.sent, worker.failed)
    return worker
