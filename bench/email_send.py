"""Benchmark: alert emails per second into a local aiosmtpd server, against one-connection-per-message.

Each message is what a subscriber gets: subject, plain text, HTML and the chart as an inline
PNG, rendered for each recipient (their own unsubscribe link is in the body, as the worker
does; the chart is drawn once). Two senders, alternated, 3 runs each, medians quoted:

1. the email channel (``EmailChannel.send`` through its ``SmtpPool``: a few SMTP sessions,
   each reused for many transactions), all messages started at once;
2. the peer: ``aiosmtplib.send`` per message (connect, EHLO, send, QUIT each time, as
   ``signalmint.mail.SmtpMailer`` does) with the same message bytes, 8 at a time.

The server runs in its own process (aiosmtpd's ``Controller``) so it does not share our GIL,
and reports how many messages it received, which must match. Target: >= 300 messages/s.
Run with ``uv run python bench/email_send.py``; the last line is machine-readable.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import aiosmtplib
import numpy as np

from signalmint.config import EmailConfig
from signalmint.delivery.channels.base import ChannelContext, Message
from signalmint.delivery.channels.email import EmailChannel, SmtpPool, close, email_bytes
from signalmint.delivery.render import chart_png, signal_text

SENDER = "signalmint <alerts@bench.example>"
SERVER = """
import sys, time
from aiosmtpd.controller import Controller

class Count:
    received = 0
    async def handle_DATA(self, server, session, envelope):
        Count.received += len(envelope.rcpt_tos)
        return "250 2.0.0 queued"

controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
print(Count.received, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


async def naive(config: EmailConfig, n: int, run: str, concurrency: int = 8) -> float:
    """The same messages, one SMTP connection each."""
    gate = asyncio.Semaphore(concurrency)
    png = chart()

    async def one(i: int) -> None:
        async with gate:
            to = f"user{i}@example.com"
            data = email_bytes(message(i, run, png), to, SENDER)
            await aiosmtplib.send(data, sender="alerts@bench.example", recipients=[to],
                                  hostname=config.host, port=config.port, start_tls=False,
                                  local_hostname="bench.example")  # fmt: skip

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages per pooled run")
    parser.add_argument("--naive-messages", type=int, default=400, help="messages per peer run")
    parser.add_argument("--pool", type=int, default=4, help="SMTP sessions in the pool (the channel's default)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    if server.stdout.readline().strip() != "ready":
        raise SystemExit("the aiosmtpd server did not start")
    config = EmailConfig(host="127.0.0.1", port=port, starttls=False, sender=SENDER)
    size_kb = len(email_bytes(message(0, "probe", chart()), "x@example.com", SENDER)) / 1024
    print(f"one message: {size_kb:.1f} KB (text, HTML and an inline PNG chart)")

    ours, peer = [], []
    for run in range(args.runs):
        ours.append(asyncio.run(pooled(config, args.messages, f"pool{run}", args.pool)))
        peer.append(asyncio.run(naive(config, args.naive_messages, f"naive{run}")))
        print(f"run {run + 1}: pooled {ours[-1]:,.0f} msg/s ({args.messages} messages, {args.pool} sessions), "
              f"one connection per message {peer[-1]:,.0f} msg/s ({args.naive_messages} messages)")  # fmt: skip

    server.stdin.close()
    received = int(server.stdout.read().strip() or 0)
    server.wait(timeout=10)
    expected = args.runs * (args.messages + args.naive_messages)
    if received != expected:
        raise SystemExit(f"the server received {received} messages, expected {expected}")
    email_per_s, naive_per_s = statistics.median(ours), statistics.median(peer)
    print(f"median: pooled {email_per_s:,.0f} messages/s, one connection per message {naive_per_s:,.0f} messages/s; "
          f"all {received} received")  # fmt: skip
    print(f"RESULT email_per_s={email_per_s:.0f} naive_per_s={naive_per_s:.0f} ratio={email_per_s / naive_per_s:.2f}")


if __name__ == "__main__":
    main()
