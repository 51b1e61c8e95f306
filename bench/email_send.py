"""Alert emails per second into a local aiosmtpd sink: the email channel against aiosmtplib, same bytes.

Each message is what a subscriber gets: subject, plain text, HTML and the chart as an inline
PNG (about 13 KB), rendered for each recipient (their own unsubscribe link is in the body, as
the worker does; the chart is drawn once per run). Two senders, alternated, ``--runs`` each,
``--messages`` messages each run:

1. signalmint: ``EmailChannel.send`` through its ``SmtpPool`` (the worker's pool, with the
   product's default number of sessions, read from ``SmtpPool``), all messages started at
   once; the time includes rendering each message;
2. the peer: plain ``aiosmtplib.SMTP``, as many persistent connections as the product's pool,
   each sending message after message (``sendmail``), the very bytes signalmint produces for
   the same recipients (``email_bytes``), rendered before the clock starts.

The sink (aiosmtpd's ``Controller``) runs in its own process so it does not share our GIL;
it counts the messages and bytes it received per phase, which must match what was sent. The
ratio is the median of the per-run ratios, with its range.

    uv run python bench/email_send.py [--messages 2000] [--runs 3] [--pool N] [--port-base N]

Last line: RESULT email_per_s=... aiosmtplib_per_s=... ratio=... ratio_min=... ratio_max=...
connections=... message_kb=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.utils import parseaddr

import aiosmtplib
import numpy as np
from _common import Ports, add_common, describe_ratio, print_result, ratio_fields, ratios, span

from signalmint.config import EmailConfig
from signalmint.delivery.channels.base import ChannelContext, Message
from signalmint.delivery.channels.email import EmailChannel, SmtpPool, close, email_bytes
from signalmint.delivery.render import chart_png, signal_text

SENDER = "signalmint <alerts@bench.example>"
SERVER = """
import sys
from aiosmtpd.controller import Controller

class Count:
    received = 0
    size = 0
    async def handle_DATA(self, server, session, envelope):
        Count.received += len(envelope.rcpt_tos)
        Count.size += len(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"

controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
for line in sys.stdin:  # each line asks for the totals so far
    print(Count.received, Count.size, flush=True)
controller.stop()
"""


DOC = {"id": 42, "automation": "volume-spikes", "key": "AAPL", "time": "2024-01-02T14:30:00Z", "kind": "volume_spike",
       "score": 12.3, "url": "/signals/42",
       "payload": {"ratio": 7.43, "volume": 12.3e6, "baseline": 1.66e6, "z": 12.3, "price_change": 0.0123}}  # fmt: skip


def chart() -> bytes:
    rng = np.random.default_rng(7)
    volume = rng.lognormal(13, 0.35, 120)
    volume[-1] = 7.4 * np.median(volume)
    times = (np.datetime64("2024-01-02T12:31") + np.arange(120) * np.timedelta64(1, "m")).astype("datetime64[ns]")
    return chart_png(times, volume, np.full(120, np.median(volume)), 119)


def message(i: int, run: str, png: bytes) -> Message:
    """What the worker hands the channel: rendered for this subscriber (their own unsubscribe link)."""
    unsubscribe = f"https://bench.example/unsubscribe/{i}/tok{run}{i}"
    subject, text, html = signal_text(DOC, "Unusual volume", base_url="https://bench.example", chart=True,
                                      unsubscribe_url=unsubscribe)  # fmt: skip
    return Message(idempotency_id=f"{run}-{i}", subject=subject, text=text, html=html, payload={},
                   created_at=datetime.now(UTC), chart_png=png, unsubscribe_url=unsubscribe)  # fmt: skip


async def pooled(config: EmailConfig, n: int, run: str, size: int) -> float:
    """Render and send ``n`` messages, each to its own endpoint, through the channel's pool."""
    context = ChannelContext(smtp=config)
    context.extra["email.smtp_pool"] = SmtpPool(config, size=size)
    png = chart()

    async def one(i: int) -> None:
        channel = EmailChannel.from_url(f"mailto:user{i}@example.com", context)
        await channel.send(message(i, run, png))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await close(context)
    return n / elapsed


async def peer(config: EmailConfig, n: int, run: str, connections: int) -> tuple[float, int]:
    """The same bytes over ``connections`` persistent aiosmtplib sessions; messages/s and bytes sent."""
    png = chart()
    envelope_from = parseaddr(SENDER)[1]
    work = [
        (f"user{i}@example.com", email_bytes(message(i, run, png), f"user{i}@example.com", SENDER)) for i in range(n)
    ]
    queue = iter(work)
    hostname = socket.getfqdn()

    async def session() -> None:
        smtp = aiosmtplib.SMTP(hostname=config.host, port=config.port, start_tls=False, local_hostname=hostname)
        await smtp.connect()
        try:
            for to, data in queue:
                await smtp.sendmail(envelope_from, [to], data)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(connections)))
    return n / (time.perf_counter() - started), sum(len(d) for _, d in work)


class SinkProcess:
    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the aiosmtpd server did not start")

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="messages per run, for each sender (default 2000)")
    default_size = int(inspect.signature(SmtpPool).parameters["size"].default)
    parser.add_argument(
        "--pool",
        type=int,
        default=default_size,
        help=f"SMTP connections: the product's pool size and the peer's (default: the product's, {default_size})",
    )
    add_common(parser, runs=3)
    args = parser.parse_args()

    port = Ports(args.port_base).next()
    sink = SinkProcess(port)
    config = EmailConfig(host="127.0.0.1", port=port, starttls=False, sender=SENDER)
    size_kb = len(email_bytes(message(0, "probe", chart()), "x@example.com", SENDER)) / 1024
    print(f"one message: {size_kb:.1f} KB (text, HTML and an inline PNG chart); {args.pool} SMTP connections each; "
          f"{args.messages} messages a run; {args.runs} alternated runs")  # fmt: skip

    ours: list[float] = []
    theirs: list[float] = []
    try:
        for run in range(args.runs):
            before = sink.totals()
            ours.append(asyncio.run(pooled(config, args.messages, f"pool{run}", args.pool)))
            middle = sink.totals()
            rate, sent_bytes = asyncio.run(peer(config, args.messages, f"pool{run}", args.pool))
            theirs.append(rate)
            after = sink.totals()
            for who, (c0, _), (c1, _) in (("signalmint", before, middle), ("aiosmtplib", middle, after)):
                if c1 - c0 != args.messages:
                    raise SystemExit(f"{who}: the sink received {c1 - c0} messages, expected {args.messages}")
            print(f"run {run + 1}: signalmint {ours[-1]:,.0f} msg/s ({(middle[1] - before[1]) / 1e6:.2f} MB received), "
                  f"aiosmtplib {theirs[-1]:,.0f} msg/s ({(after[1] - middle[1]) / 1e6:.2f} MB received, "
                  f"{sent_bytes / 1e6:.2f} MB sent); ratio {ours[-1] / theirs[-1]:.2f}", flush=True)  # fmt: skip
    finally:
        sink.close()
    stats = ratios(ours, theirs)
    med, lo, hi = span(ours)
    peer_med, peer_lo, peer_hi = span(theirs)
    print(
        f"median: signalmint {med:,.0f} messages/s (runs {lo:,.0f}-{hi:,.0f}), aiosmtplib over {args.pool} "
        f"connections {peer_med:,.0f}/s (runs {peer_lo:,.0f}-{peer_hi:,.0f}); ratio {describe_ratio(stats)}"
    )
    print_result({
        "email_per_s": f"{med:.0f}", "aiosmtplib_per_s": f"{peer_med:.0f}", **ratio_fields("ratio", stats),
        "connections": args.pool, "messages": args.messages, "message_kb": f"{size_kb:.1f}", "runs": args.runs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
