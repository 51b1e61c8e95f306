"""Soak: signals at a steady rate for an hour through engine -> outbox -> workers -> a webhook receiver.

Run by hand, not in CI (README, "Benchmarks"):

    uv run python bench/soak.py [--minutes 60] [--rate 200] [--subscribers 2] [--workers 2] [--pg-url URL]

A real ``signalmint run --role engine`` process runs one synthetic automation tuned to commit
about ``--rate`` signals a second (its symbols spike at a known rate), each fanned out to
``--subscribers`` webhook endpoints; ``--workers`` real ``signalmint run --role worker``
processes deliver them to a local receiver (uvicorn, its own process). The store is PostgreSQL
(a throwaway schema of ``--pg-url``, default ``$SIGNALMINT_TEST_PG``), or a SQLite file when
neither is given. Every ``--sample-seconds`` (10) it samples each process's RSS, the queue
depth (outbox rows pending or being sent), signals, deliveries and errors, behind a progress
bar. At the end the engine stops, the queue gets ``--drain-seconds`` to empty, and it prints
each process's RSS growth (last sample against the first one after ``--warmup-seconds``),
whether the queue drained, and the errors: dead letters, failed attempts, a process that died,
and deliveries recorded as sent that never reached the receiver.

Peer, the same run: the receiver's own RSS growth (a plain uvicorn app under the same load for
the same time): a product process growing much faster than it is leaking.

Last line: RESULT minutes=... signals_per_s=... deliveries_per_s=... rss_growth_pct=... (the
largest of the product's processes) rss_growth_engine_pct=... rss_growth_workers_pct=...
rss_growth_receiver_pct=... drained=yes|no queue_left=... errors=... load1=...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fanout
from _common import Ports, add_common, print_result
from fanout_workers import Workers, throwaway_schema

SPIKE_RATE, SPIKE_GAP, INTERVAL = 0.25, 2, 1.0  # each symbol spikes on a quarter of its 1 s bars


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config_text(url: str, args: argparse.Namespace) -> str:
    symbols = max(1, round(args.rate * INTERVAL / SPIKE_RATE))
    return (
        f'database: "{url}"\n'
        f"secret: {fanout.PEPPER.decode()}\n"
        "log_level: warning\n"
        "checkpoint_every: 5s\n"
        "delivery: {allow_loopback_targets: true, poll: 100ms}\n"
        "plans:\n  - {id: premium, price: 2900, channels: [web, webhook]}\n"
        "automations:\n"
        "  - name: soak\n"
        f"    source: {{kind: synthetic, symbols: {symbols}, interval: {INTERVAL}, spike_rate: {SPIKE_RATE}, "
        f"spike_gap: {SPIKE_GAP}, warmup: 30, seed: 5}}\n"
        "    detector: {kind: volume_spike, window: 20, ratio: 3, z: 3, cooldown: 0s}\n"
        "    retention: 10m\n"
        "    max_signal_age: 1h\n"  # a loaded machine's bars come in late; the soak is about delivery
    )


@contextlib.contextmanager
def store(args: argparse.Namespace, tmp: str) -> Iterator[str]:
    base = args.pg_url or os.environ.get("SIGNALMINT_TEST_PG")
    if base:
        with throwaway_schema(base) as url:
            yield url
    else:
        yield f"sqlite:///{tmp}/soak.db"


def snapshot(db: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from signalmint.store.outbox import counts_by_status
    from signalmint.store.tables import deliveries, signals

    counts = db.read_sync(counts_by_status)

    def more(conn: Any) -> tuple[int, int]:
        failed = conn.execute(select(func.count()).select_from(deliveries).where(deliveries.c.last_error.is_not(None)))
        return int(conn.execute(select(func.count()).select_from(signals)).scalar_one()), int(failed.scalar_one())

    signal_count, failed = db.read_sync(more)
    return {
        "signals": signal_count,
        "queue": counts.get("pending", 0) + counts.get("sending", 0),
        "sent": counts.get("sent", 0),
        "dead": counts.get("dead", 0),
        "failed_attempts": failed,
    }


def growth(series: list[float], first: int) -> float:
    base = series[min(first, len(series) - 1)]
    return (series[-1] / base - 1) * 100 if base else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="how long signals flow (default 60)")
    parser.add_argument("--rate", type=float, default=200, help="signals a second the engine is tuned to (default 200)")
    parser.add_argument("--subscribers", type=int, default=2, help="webhook endpoints per signal (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--pg-url", help="PostgreSQL URL (default $SIGNALMINT_TEST_PG; neither: a SQLite file)")
    parser.add_argument("--sample-seconds", type=float, default=10, help="sampling period (default 10)")
    parser.add_argument(
        "--warmup-seconds", type=float, default=60, help="RSS growth is measured from the first sample after this"
    )
    parser.add_argument("--drain-seconds", type=float, default=120, help="how long the queue gets to empty at the end")
    add_common(parser, runs=None)
    args = parser.parse_args()
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    ports = Ports(args.port_base)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp, store(args, tmp) as url:
        sink = fanout.Sink(ports.next(), 0.0)
        settings, db = fanout.build(url, sink.port, args.subscribers, 256, 500)
        config = Path(tmp) / "soak.yaml"
        config.write_text(config_text(url, args))
        logs = Path(tmp) / "processes.log"
        workers = Workers(args.workers, config, logs)
        engine = subprocess.Popen(
            [sys.executable, "-m", "signalmint.cli", "run", "-c", str(config), "--role", "engine"],
            stdout=subprocess.DEVNULL,
            stderr=open(logs, "ab"),  # noqa: SIM115 - the process holds it
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        pids = {"engine": engine.pid, **{f"worker{i + 1}": p.pid for i, p in enumerate(workers.procs)}}
        pids["receiver"] = sink.proc.pid
        rss: dict[str, list[float]] = {name: [] for name in pids}
        samples: list[dict[str, Any]] = []
        arrived = 0
        died: list[str] = []
        started = time.monotonic()
        print(
            f"soak: {args.minutes:g} min at ~{args.rate:g} signals/s x {args.subscribers} webhooks, "
            f"{args.workers} workers, store {settings.database.split('@')[-1].split('?')[0]}; "
            f"a sample every {args.sample_seconds:g} s",
            flush=True,
        )
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=False
            ) as progress:
                task = progress.add_task("starting", total=seconds)
                while (elapsed := time.monotonic() - started) < seconds:
                    time.sleep(min(args.sample_seconds, max(0.0, seconds - elapsed)))
                    arrived += sink.get("reset")["count"]
                    for name, pid in pids.items():
                        try:
                            rss[name].append(rss_mb(pid))
                        except FileNotFoundError:
                            if name not in died:
                                died.append(name)
                            rss[name].append(float("nan"))
                    snap = {"t": time.monotonic() - started, **snapshot(db), "arrived": arrived}
                    samples.append(snap)
                    mine = sum(v[-1] for k, v in rss.items() if k != "receiver")
                    progress.update(
                        task,
                        completed=min(seconds, snap["t"]),
                        description=(
                            f"{snap['signals']:,} signals, {snap['sent']:,} sent, queue {snap['queue']:,}, "
                            f"errors {snap['dead'] + snap['failed_attempts']}, RSS {mine:,.0f} MB"
                        ),
                    )
        finally:
            engine.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                engine.wait(30)
            if engine.poll() is None:
                engine.kill()
        flowed = samples[-1]["t"] if samples else seconds
        deadline = time.monotonic() + args.drain_seconds
        final = snapshot(db)
        while final["queue"] and time.monotonic() < deadline:
            time.sleep(0.5)
            final = snapshot(db)
        time.sleep(1.0)  # the last receipts
        arrived += sink.get("reset")["count"]
        workers.stop()
        for name in pids:
            if name.startswith("worker") and workers.procs[int(name[6:]) - 1].returncode not in (0, -15):
                died.append(name)
        db.close()
        sink.close()

    first = next((i for i, s in enumerate(samples) if s["t"] >= args.warmup_seconds), 0)
    growths = {name: growth(series, first) for name, series in rss.items()}
    product = {k: v for k, v in growths.items() if k != "receiver"}
    worst = max(product.values())
    worker_growth = max(v for k, v in product.items() if k.startswith("worker"))
    lost = max(0, final["sent"] - arrived)
    errors = final["dead"] + final["failed_attempts"] + len(died) + lost
    drained = final["queue"] == 0
    signals_per_s = (samples[-1]["signals"] - samples[0]["signals"]) / (flowed - samples[0]["t"]) if samples else 0
    deliveries_per_s = final["sent"] / flowed if flowed else 0
    for name, series in rss.items():
        print(
            f"  {name}: RSS {series[first]:,.0f} MB after warm-up -> {series[-1]:,.0f} MB at the end "
            f"({growths[name]:+.1f}%), median {statistics.median(series):,.0f} MB"
        )
    print(
        f"{final['signals']:,} signals ({signals_per_s:,.0f}/s), {final['sent']:,} deliveries sent "
        f"({deliveries_per_s:,.0f}/s), {arrived:,} received; queue {'drained' if drained else 'NOT drained'} "
        f"({final['queue']} left); errors {errors} (dead {final['dead']}, failed attempts "
        f"{final['failed_attempts']}, processes died {died or 'none'}, sent but not received {lost})"
    )
    print(
        f"RSS growth: product processes at most {worst:+.1f}% (engine {growths['engine']:+.1f}%, workers "
        f"{worker_growth:+.1f}%); the receiver (peer) {growths['receiver']:+.1f}%"
    )
    print_result(
        {
            "minutes": f"{args.minutes:g}",
            "signals_per_s": f"{signals_per_s:.0f}",
            "deliveries_per_s": f"{deliveries_per_s:.0f}",
            "rss_growth_pct": f"{worst:.1f}",
            "rss_growth_engine_pct": f"{growths['engine']:.1f}",
            "rss_growth_workers_pct": f"{worker_growth:.1f}",
            "rss_growth_receiver_pct": f"{growths['receiver']:.1f}",
            "drained": "yes" if drained else "no",
            "queue_left": final["queue"],
            "errors": errors,
            "signals": final["signals"],
            "sent": final["sent"],
            "workers": args.workers,
            "subscribers": args.subscribers,
            "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "warmup_s": f"{timedelta(seconds=args.warmup_seconds).total_seconds():g}",
        }
    )


if __name__ == "__main__":
    main()
