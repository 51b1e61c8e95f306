"""Premium reports: render one weekly report over a realistic week, then fan it out by email.

The data (SQLite in a temporary folder, ``--database`` for another): ISO week 2026-W48 of
1-minute bars for ``--symbols`` symbols (50: 504,000 bars, plus a day either side), about
``--signals`` volume-spike signals a symbol spread over the week with their outcomes, and
``--subscribers`` confirmed subscribers (10,000) on a plan in the report's audience, each with
an email endpoint (bulk inserts: the bench measures reports, not sign-ups).

Measured, ``--runs`` times (alternated with the peer):

1. render: what the engine's report step does for one period, read the week (signals, outcomes,
   price moves over the bars, the track record) and render the web HTML, the email HTML and
   the PDF (``render_period``), in seconds; the target is 60 s or less;
2. enqueue: the report outbox rows for every entitled endpoint, written in one transaction
   (``recipients`` + ``enqueue_reports``, what :func:`~signalmint.reports.publish.publish` does
   after storing the report);
3. fan-out: :class:`~signalmint.delivery.report_outbox.ReportSender` (in this process, as in the
   embedded default: claim, entitlement check, build each message, send, record every outcome)
   drains the outbox into a local SMTP sink: emails/s; the target is 1,000/s or more. Each
   email is the report's HTML with its chart inline and the PDF attached (its size is printed);
4. the peer: plain ``aiosmtplib.SMTP`` over as many persistent connections as the product's SMTP
   pool, sending message after message (``sendmail``), the very bytes signalmint sends to the same
   recipients (``email_bytes`` of the same message, built as it goes, as the product does), to the
   same sink. The ratio is the median of the per-run ratios, with its range.

The SMTP sink runs in its own process (so it does not share our GIL): a small asyncio server
speaking enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, QUIT) that reads each message's DATA in
bulk up to ``CRLF.CRLF`` and counts messages and bytes, which must match what was sent;
``--sink aiosmtpd`` uses aiosmtpd's ``Controller`` instead (slower with large messages: it
parses DATA line by line).

    uv run python bench/reports.py [--symbols 50] [--subscribers 10000] [--runs 3] [--sink fast|aiosmtpd]

Last line: RESULT render_s=... emails_per_s=... aiosmtplib_per_s=... ratio_to_aiosmtplib=...
ratio_min=... ratio_max=... enqueue_s=... email_kb=... pdf_kb=... bars=... signals=...
subscribers=... connections=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
import numpy as np
from _common import Ports, add_common, describe_ratio, print_result, ratio_fields, ratios, span

WEEK_START = datetime(2026, 11, 23, tzinfo=UTC)  # Monday of ISO week 2026-W48
NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)
SENDER = "reports <reports@bench.example>"

FAST_SINK = r"""
import asyncio, sys

totals = [0, 0]

async def session(reader, writer):
    writer.write(b"220 sink ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif verb == b"DATA":
                writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
                await writer.drain()
                data = await reader.readuntil(b"\r\n.\r\n")
                totals[0] += 1
                totals[1] += len(data)
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                writer.write(b"250 OK\r\n")
            else:
                writer.write(b"502 not here\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.close()

async def main(port):
    server = await asyncio.start_server(session, "127.0.0.1", port, limit=1 << 26)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while await reader.readline():  # each line asks for the totals so far
        print(totals[0], totals[1], flush=True)
    server.close()

asyncio.run(main(int(sys.argv[1])))
"""

AIOSMTPD_SINK = """
import sys
from aiosmtpd.controller import Controller

class Count:
    received = 0
    size = 0
    async def handle_DATA(self, server, session, envelope):
        Count.received += len(envelope.rcpt_tos)
        Count.size += len(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"

controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]), data_size_limit=0)
controller.start()
print("ready", flush=True)
for line in sys.stdin:
    print(Count.received, Count.size, flush=True)
controller.stop()
"""


class SinkProcess:
    def __init__(self, port: int, kind: str) -> None:
        script = FAST_SINK if kind == "fast" else AIOSMTPD_SINK
        self.proc = subprocess.Popen([sys.executable, "-c", script, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the SMTP sink did not start")

    def totals(self) -> tuple[int, int]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        count, size = self.proc.stdout.readline().split()
        return int(count), int(size)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- the data ---------------------------------------------------------------------------------------


def settings_for(database: str, smtp_port: int) -> Any:
    from signalmint.config import parse_settings
    from signalmint.registry import Registry

    text = f"""
database: {database}
base_url: https://bench.example
secret: reports-bench-secret-0123456789
email: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, sender: "{SENDER}"}}
plans:
  - {{id: premium, price: 2900, channels: [web, email]}}
automations:
  - name: stocks
    title: US stocks volume
    source: {{kind: synthetic, interval: 60}}
    detector: {{kind: volume_spike}}
    outcomes: {{horizons: [5, 60]}}
    reports:
      - name: weekly
        schedule: "0 8 * * MON"
        period: week
        audience: {{plans: [premium], price: 300}}
"""
    return parse_settings(text, registry=Registry.from_entry_points())


def seed(settings: Any, db: Any, symbols: int, per_symbol: int, subscribers_n: int) -> tuple[int, int]:
    """The week's bars, signals and outcomes, and the subscribers; (bars, signals) stored."""
    from signalmint.config import OutcomesConfig
    from signalmint.engine.outcomes import due_outcomes
    from signalmint.records import Automation, Frame, Signal
    from signalmint.store import append_signals, sync_automations
    from signalmint.store.bars import insert_bars
    from signalmint.store.outcomes import insert_outcomes
    from signalmint.store.plans import sync_plans
    from signalmint.store.tables import endpoints, subscribers, subscriptions

    now = datetime.now(UTC)
    db.write_sync(sync_automations, [Automation("stocks", "US stocks volume", "", "synthetic", "volume_spike")], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)
    minutes = 9 * 24 * 60  # a day before the week to a day after it
    first = np.datetime64((WEEK_START - timedelta(days=1)).replace(tzinfo=None), "ns")
    times = first + np.arange(minutes) * np.timedelta64(1, "m")
    rng = np.random.default_rng(48)
    bars = 0
    signals: list[Signal] = []
    for n in range(symbols):
        key = f"S{n:03d}"
        close = 20.0 + 5 * n + np.cumsum(rng.normal(0, 0.02, minutes))
        volume = rng.lognormal(8, 0.4, minutes)
        spikes = rng.choice(np.arange(24 * 60, 8 * 24 * 60), per_symbol, replace=False)
        volume[spikes] *= rng.uniform(6, 30, per_symbol)
        frame = Frame(keys=np.array([key] * minutes), times=times,
                      columns={"open": close, "high": close + 0.05, "low": close - 0.05, "close": close,
                               "volume": volume})  # fmt: skip
        bars += db.write_sync(insert_bars, "stocks", frame)
        for i in sorted(spikes.tolist()):
            at = WEEK_START - timedelta(days=1) + timedelta(minutes=i)
            ratio = float(volume[i] / np.median(volume))
            signals.append(Signal("stocks", key, at, "volume_spike", ratio,
                                  {"volume": float(volume[i]), "baseline": float(np.median(volume)), "ratio": ratio,
                                   "price_change": 0.001}))  # fmt: skip
    db.write_sync(append_signals, "stocks", signals, now)
    found = db.read_sync(due_outcomes, "stocks", OutcomesConfig(horizons=[5, 60], baseline_samples=20, lookback=120))
    db.write_sync(insert_outcomes, found, now)

    def people(conn: Any) -> None:
        conn.execute(subscribers.insert(), [
            {"id": i + 1, "email": f"s{i}@bench.example", "created_at": now, "confirmed_at": now, "timezone": "UTC"}
            for i in range(subscribers_n)
        ])  # fmt: skip
        conn.execute(subscriptions.insert(), [
            {"subscriber_id": i + 1, "plan_id": plan.id, "plan_version": plan.version, "state": "active",
             "started_at": now, "origin": "bench", "updated_at": now}
            for i in range(subscribers_n)
        ])  # fmt: skip
        conn.execute(endpoints.insert(), [
            {"subscriber_id": i + 1, "channel": "email", "url": f"mailto:s{i}@bench.example", "secrets": [],
             "status": "active", "status_reason": "", "created_at": now, "updated_at": now}
            for i in range(subscribers_n)
        ])  # fmt: skip

    db.write_sync(people)
    return bars, len(signals)


def render(settings: Any, db: Any) -> tuple[Any, float]:
    """One rendering of W48, as the report step makes it: (the report, seconds)."""
    from signalmint.config.reports import parse_period
    from signalmint.reports.scheduler import find_definition, render_period

    automation, spec = find_definition(settings, "stocks", "weekly")
    period = parse_period(spec, "2026-W48")
    started = time.perf_counter()
    report = db.read_sync(render_period, settings, automation, spec, period, NOW)
    return report, time.perf_counter() - started


def enqueue(settings: Any, db: Any, report: Any) -> tuple[int, float]:
    """Empty the report outbox, then enqueue the report for its audience (one transaction)."""
    from signalmint.config import delivery_channels
    from signalmint.reports.publish import find_spec, recipients
    from signalmint.store.report_outbox import enqueue_reports
    from signalmint.store.tables import report_deliveries

    db.write_sync(lambda conn: conn.execute(report_deliveries.delete()))
    spec = find_spec(settings, "stocks", "weekly")
    assert spec is not None, "the bench's settings define the weekly report"
    now = datetime.now(UTC)
    started = time.perf_counter()

    def write(conn: Any) -> int:
        return int(enqueue_reports(conn, recipients(conn, spec, report, delivery_channels(settings), now), now))

    n = db.write_sync(write)
    return n, time.perf_counter() - started


def run_loop(coroutine: Any) -> Any:
    """Run on uvloop, as `signalmint run` does."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


async def ours(settings: Any, db: Any, expected: int) -> float:
    """Drain the report outbox through ReportSender, as the worker role runs it: emails/s."""
    from signalmint.accounts.service import server_pepper
    from signalmint.delivery.channels import email
    from signalmint.delivery.report_outbox import ReportSender
    from signalmint.delivery.runner import channel_context

    context = channel_context(settings)
    sender = ReportSender(settings, db, context, server_pepper(settings, db), batch=settings.delivery.batch,
                          concurrency=settings.delivery.concurrency)  # fmt: skip
    started = time.perf_counter()
    try:
        while await sender.run_once():
            pass
        elapsed = time.perf_counter() - started
    finally:
        await email.close(context)
        await context.http.close()
    if sender.sent != expected:
        raise SystemExit(f"signalmint sent {sender.sent} of {expected} (failed attempts: {sender.failed})")
    return expected / elapsed


def messages_for(settings: Any, db: Any, report: Any) -> tuple[Any, list[tuple[int, str]]]:
    """The prepared report and (endpoint id, address) of every recipient, for the peer."""
    from signalmint.delivery.report_outbox import prepare_report, report_link
    from signalmint.store.outbox import list_endpoints

    link = report_link(settings, report)
    prepared = prepare_report(report, link, datetime.now(UTC))
    return prepared, [(e.id, e.url.removeprefix("mailto:")) for e in db.read_sync(list_endpoints)]


async def peer(settings: Any, prepared: Any, recipients: list[tuple[int, str]], connections: int) -> float:
    """The same messages over ``connections`` persistent aiosmtplib sessions, bytes built as it goes: emails/s."""
    from signalmint.delivery.channels.email import email_bytes
    from signalmint.delivery.report_outbox import report_message
    from signalmint.delivery.worker import unsubscribe_token
    from signalmint.store.outbox import Endpoint
    from signalmint.store.report_outbox import ReportDelivery, report_idempotency_id

    pepper = settings.secret.encode()
    envelope_from = parseaddr(SENDER)[1]
    hostname = socket.getfqdn()
    queue = iter(recipients)
    base = settings.base_url.rstrip("/")

    async def session() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.email.port, start_tls=False,
                               local_hostname=hostname)  # fmt: skip
        await smtp.connect()
        try:
            for endpoint_id, address in queue:
                key = report_idempotency_id(prepared.report.id, endpoint_id)
                row = ReportDelivery(0, prepared.report.id, endpoint_id, 0, "plan", key, "sending", NOW, 1)
                endpoint = Endpoint(endpoint_id, 0, "email", f"mailto:{address}", (), "active")
                unsubscribe = f"{base}/unsubscribe/{endpoint_id}/{unsubscribe_token(endpoint_id, pepper)}"
                data = email_bytes(report_message(prepared, row, endpoint, unsubscribe), address, SENDER)
                await smtp.sendmail(envelope_from, [address], data)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(connections)))
    return len(recipients) / (time.perf_counter() - started)


def main() -> None:
    from signalmint.delivery.channels.email import SmtpPool

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=50, help="symbols with a week of 1-minute bars (default 50)")
    parser.add_argument("--signals", type=int, default=30, help="volume spikes per symbol in the data (default 30)")
    parser.add_argument("--subscribers", type=int, default=10_000, help="audience, one email each (default 10000)")
    parser.add_argument("--sink", choices=("fast", "aiosmtpd"), default="fast", help="the SMTP sink (default fast)")
    parser.add_argument("--database", help="a database URL to fill (default: SQLite in a temporary folder)")
    add_common(parser, runs=3)
    args = parser.parse_args()
    connections = int(inspect.signature(SmtpPool).parameters["size"].default)

    from signalmint.store import Database
    from signalmint.store.migrate import migrate

    port = Ports(args.port_base).next()
    sink = SinkProcess(port, args.sink)
    folder = tempfile.TemporaryDirectory(prefix="sm-bench-reports-")
    database = args.database or f"sqlite:///{Path(folder.name) / 'bench.db'}"
    settings = settings_for(database, port)
    db = Database(settings.database)
    migrate(db)
    seeded = time.perf_counter()
    bars, signals = seed(settings, db, args.symbols, args.signals, args.subscribers)
    print(f"seeded {bars:,} bars, {signals:,} signals and {args.subscribers:,} subscribers in "
          f"{time.perf_counter() - seeded:.1f} s; {args.runs} alternated runs", flush=True)  # fmt: skip

    from signalmint.reports.publish import publish

    renders: list[float] = []
    enqueues: list[float] = []
    mine: list[float] = []
    theirs: list[float] = []
    stored = None
    try:
        for run in range(args.runs):
            report, seconds = render(settings, db)
            renders.append(seconds)
            if stored is None:
                stored, _, _ = db.write_sync(publish, settings, report, NOW)
                prepared, recipients = messages_for(settings, db, stored)
                probe = recipients[0]
                from signalmint.delivery.channels.email import email_bytes
                from signalmint.delivery.report_outbox import report_message
                from signalmint.store.outbox import Endpoint
                from signalmint.store.report_outbox import ReportDelivery

                row = ReportDelivery(0, stored.id, probe[0], 0, "plan", "rep_probe", "sending", NOW, 1)
                sample = email_bytes(report_message(prepared, row, Endpoint(probe[0], 0, "email", "", (), "active"),
                                                    "https://bench.example/u"), probe[1], SENDER)  # fmt: skip
                email_kb, pdf_kb = len(sample) / 1024, len(stored.pdf) / 1024
                print(f"one email: {email_kb:.0f} KB (HTML, inline chart, PDF of {pdf_kb:.0f} KB attached); "
                      f"{connections} SMTP connections each; {args.sink} sink", flush=True)  # fmt: skip
            queued, enqueue_s = enqueue(settings, db, stored)
            enqueues.append(enqueue_s)
            if queued != args.subscribers:
                raise SystemExit(f"enqueued {queued} of {args.subscribers}")
            before = sink.totals()
            mine.append(run_loop(ours(settings, db, queued)))
            middle = sink.totals()
            theirs.append(run_loop(peer(settings, prepared, recipients, connections)))
            after = sink.totals()
            for who, (c0, _), (c1, _) in (("signalmint", before, middle), ("aiosmtplib", middle, after)):
                if c1 - c0 != args.subscribers:
                    raise SystemExit(f"{who}: the sink received {c1 - c0} emails, expected {args.subscribers}")
            print(f"run {run + 1}: render {seconds:.1f} s, enqueue {enqueue_s:.2f} s, signalmint {mine[-1]:,.0f} "
                  f"emails/s ({(middle[1] - before[1]) / 1e6:.0f} MB received), aiosmtplib {theirs[-1]:,.0f}/s "
                  f"({(after[1] - middle[1]) / 1e6:.0f} MB); ratio {mine[-1] / theirs[-1]:.2f}",
                  flush=True)  # fmt: skip
    finally:
        sink.close()
        folder.cleanup()
    stats = ratios(mine, theirs)
    render_med, render_lo, render_hi = span(renders)
    med, lo, hi = span(mine)
    peer_med, peer_lo, peer_hi = span(theirs)
    print(f"median: render {render_med:.1f} s (runs {render_lo:.1f}-{render_hi:.1f}; target <= 60), signalmint "
          f"{med:,.0f} emails/s (runs {lo:,.0f}-{hi:,.0f}; target >= 1,000), aiosmtplib over {connections} connections "
          f"{peer_med:,.0f}/s (runs {peer_lo:,.0f}-{peer_hi:,.0f}); ratio {describe_ratio(stats)}")  # fmt: skip
    print_result({
        "render_s": f"{render_med:.1f}", "emails_per_s": f"{med:.0f}", "aiosmtplib_per_s": f"{peer_med:.0f}",
        **ratio_fields("ratio_to_aiosmtplib", stats), "enqueue_s": f"{span(enqueues)[0]:.2f}",
        "email_kb": f"{email_kb:.0f}", "pdf_kb": f"{pdf_kb:.0f}", "bars": bars, "signals": signals,
        "subscribers": args.subscribers, "connections": connections, "sink": args.sink, "runs": args.runs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
