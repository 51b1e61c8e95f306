"""``bench/fanout.py --pg``: webhook fan-out on PostgreSQL with N worker processes.

The store is a throwaway schema in the PostgreSQL database of ``--pg-url`` (default
``$SIGNALMINT_TEST_PG``), dropped at the end. Workers are real ``signalmint run --role worker``
processes reading a config that points at that schema; this process plays the engine (it
commits signals and their fan-out, as ``commit_tick`` does) and the sink is the same local
receiver as the rest of the bench (uvicorn, its own process, recording each ``webhook-id``).

1. throughput: for each worker count in ``--workers`` (default 1,2,4), one signal to
   ``--endpoints`` webhook endpoints is committed and the workers drain it; deliveries/s is
   measured from the commit's end to the sink's last receipt. Counts alternate order across
   ``--runs``; the median per count is quoted, and where it stops growing (the first count
   that adds less than 10% over the one before). Peer, the same run: wrk POSTing the
   product's request bytes to the same sink with as many connections as the workers keep in
   flight (the receiver's ceiling); the ratio is best-count throughput / wrk.
2. latency at half saturation: with the best count running, signals are committed open loop
   at half the saturation throughput (``--subscribers`` endpoints each) for
   ``--latency-seconds``; latency is from a signal's commit (its end) to each receipt. Per
   signal, the time to its first receipt (pickup: idle poll + claim + load) and the spread
   from first to last receipt (the sends of a round) say where the time at the p99 goes.
   Printed with the offered load and what was achieved (signals committed, deliveries
   received per second). ``--offered`` fixes the load instead of half the saturation (and
   ``--latency-only`` skips phase 1), so code compares at the same load; ``--baseline-src DIR``
   runs another checkout's workers (PYTHONPATH=DIR/src) at that load too, alternated run by
   run with this tree's: the p99 ratio is per run, a machine that gets busier hits both alike.
   Each latency run starts fresh workers and offers ``--warmup-seconds`` of load first.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fanout
from _common import describe_ratio, percentile, print_result, ratio_fields, ratios, span

GROWTH = 1.10  # a count "grows" the throughput when it adds at least 10% over the one before


@contextlib.contextmanager
def throwaway_schema(base_url: str) -> Iterator[str]:
    """A fresh schema in the database of ``base_url``; the URL with its search_path; dropped after."""
    from sqlalchemy import create_engine, text

    schema = f"bench_fanout_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def worker_config(path: Path, url: str, args: argparse.Namespace) -> None:
    delivery = (
        f"{{allow_loopback_targets: true, concurrency: {args.concurrency}, batch: {args.batch}, "
        f"poll: {args.poll_ms:g}ms}}"
    )
    path.write_text(
        f'database: "{url}"\n'
        f"secret: {fanout.PEPPER.decode()}\n"
        f"log_level: warning\n"
        f"delivery: {delivery}\n"
        "plans:\n  - {id: premium, price: 2900, channels: [web, webhook]}\n"
    )


class Workers:
    """N ``signalmint run --role worker`` processes, started together, ready when each says so."""

    def __init__(self, n: int, config: Path, logs: Path, source: str | None = None) -> None:
        command = [sys.executable, "-m", "signalmint.cli", "run", "-c", str(config), "--role", "worker"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        if source:  # workers run the signalmint of another tree (--baseline-src): an A/B at the same load
            env["PYTHONPATH"] = os.pathsep.join(x for x in (str(Path(source) / "src"), env.get("PYTHONPATH")) if x)
        self.log = open(logs, "ab")  # noqa: SIM115 - closed in stop()
        self.procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, env=env) for _ in range(n)]
        selector = selectors.DefaultSelector()
        for proc in self.procs:
            assert proc.stdout is not None
            selector.register(proc.stdout, selectors.EVENT_READ, proc)
        waiting, deadline = set(self.procs), time.monotonic() + 180  # a loaded machine imports slowly
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                proc = key.data
                line = proc.stdout.readline()
                if b"signalmint is running" in line:
                    waiting.discard(proc)
                    selector.unregister(key.fileobj)
                elif not line:
                    self.stop()
                    raise SystemExit(f"a worker exited with {proc.wait()}:\n{logs.read_text()[-2000:]}")
        selector.close()
        if waiting:
            self.stop()
            raise SystemExit(f"{len(waiting)} workers did not start within 180 s:\n{logs.read_text()[-2000:]}")
        # the rest of their output is not read: drain it so a chatty worker never blocks on a full pipe
        for proc in self.procs:
            assert proc.stdout is not None
            threading.Thread(target=proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log.close()


def wait_all_sent(db: Any, total: int, seconds: float = 60) -> None:
    from signalmint.store.outbox import counts_by_status

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts = db.read_sync(counts_by_status)
        if counts.get("sent", 0) >= total:
            return
        time.sleep(0.05)
    raise SystemExit(f"after {seconds:g} s the outbox still holds {counts}; {total} rows should be sent")


def throughput(db: Any, sink: fanout.Sink, endpoints: int, key: str, total: int, timeout: float) -> float:
    """One signal to every endpoint, drained by the running workers: deliveries/s from commit to last receipt."""
    from signalmint.delivery.fanout import FanOut

    sink.stats(reset=True)
    fanout.commit(db, FanOut({"webhook"}), key)
    committed = time.time()
    deadline = time.monotonic() + timeout
    while sink.stats()["count"] < endpoints:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {sink.stats()['count']} of {endpoints} deliveries arrived in {timeout:g} s")
        time.sleep(0.05)
    arrivals = sink.stats(full=True)["arrivals"]
    wait_all_sent(db, total)
    last: float = max(arrivals.values())
    return endpoints / (last - committed)


def latency(db: Any, sink: fanout.Sink, signals_per_s: float, subscribers: int, seconds: float) -> dict[str, float]:
    """Open loop: signal i committed at t0 + i/rate to ``subscribers`` endpoints; commit-to-receipt figures."""
    from signalmint.delivery.fanout import FanOut
    from signalmint.store.outbox import idempotency_id, list_endpoints

    sink.stats(reset=True)
    out = FanOut({"webhook"})
    chosen = sorted(e.id for e in db.read_sync(list_endpoints))[:subscribers]
    out.refresh_seconds = 1e9
    db.read_sync(out.refresh)
    keep = set(chosen)
    for sid in list(out.endpoints):
        out.endpoints[sid] = [e for e in out.endpoints[sid] if e.id in keep]
    committed: dict[int, float] = {}
    late = 0
    n = max(1, round(seconds * signals_per_s))
    tag = uuid.uuid4().hex[:6]  # keys of this run (runs share the schema)
    t0 = time.perf_counter()
    started: list[float] = []
    for i in range(n):
        due = t0 + i / signals_per_s
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        elif -pause > 1 / signals_per_s:
            late += 1
        started.append(time.perf_counter())
        signal_id, _ = fanout.commit(db, out, f"L{tag}{i}")
        committed[signal_id] = time.time()
    expected = n * subscribers
    deadline = time.monotonic() + 60
    while sink.stats()["count"] < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    arrivals = sink.stats(full=True)["arrivals"]
    lags: list[float] = []
    pickups: list[float] = []
    spreads: list[float] = []
    for signal_id, at in committed.items():
        got = [arrivals[k] for e in chosen if (k := idempotency_id(signal_id, e)) in arrivals]
        lags.extend(g - at for g in got)
        if got:
            pickups.append(min(got) - at)
            spreads.append(max(got) - min(got))
    for values in (lags, pickups, spreads):
        values.sort()
    received = sorted(arrivals.values())
    return {
        "offered_per_s": signals_per_s * subscribers,
        "achieved_per_s": (n - 1) * subscribers / (started[-1] - started[0]) if n > 1 else float("nan"),
        "received_per_s": (len(received) - 1) / (received[-1] - received[0]) if len(received) > 1 else float("nan"),
        "samples": len(lags),
        "missing": expected - len(lags),
        "late_commits": late,
        "p50_ms": percentile(lags, 50) * 1000,
        "p99_ms": percentile(lags, 99) * 1000,
        "max_ms": lags[-1] * 1000 if lags else float("nan"),
        "pickup_p50_ms": percentile(pickups, 50) * 1000,
        "pickup_p99_ms": percentile(pickups, 99) * 1000,
        "spread_p50_ms": percentile(spreads, 50) * 1000,
        "spread_p99_ms": percentile(spreads, 99) * 1000,
    }


def latency_line(name: str, n: int, lat: dict[str, float]) -> str:
    return (
        f"{name}, {n} workers: offered {lat['offered_per_s']:,.0f} deliveries/s, committed "
        f"{lat['achieved_per_s']:,.0f}/s, received {lat['received_per_s']:,.0f}/s; commit-to-receipt "
        f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms "
        f"over {lat['samples']:,} ({lat['missing']} missing, {lat['late_commits']} late commits); "
        f"pickup p50/p99 {lat['pickup_p50_ms']:.0f}/{lat['pickup_p99_ms']:.0f} ms, "
        f"spread p50/p99 {lat['spread_p50_ms']:.0f}/{lat['spread_p99_ms']:.0f} ms"
    )


def run(args: argparse.Namespace, ports: Any, connections: int) -> None:
    base = args.pg_url or os.environ.get("SIGNALMINT_TEST_PG")
    if not base:
        raise SystemExit("--pg needs a PostgreSQL URL: --pg-url or SIGNALMINT_TEST_PG")
    counts = sorted({int(x) for x in args.workers.split(",")})
    if not counts or counts[0] < 1:
        raise SystemExit("--workers takes worker counts such as 1,2,4")
    if args.latency_only and not args.offered:
        raise SystemExit("--latency-only needs --offered (deliveries/s): there is no saturation to halve")
    rates: dict[int, list[float]] = {n: [] for n in counts}
    wrk_rates: list[float] = []
    best_runs: list[float] = []
    variants: list[tuple[str, str | None]] = [("this tree", None)]
    if args.baseline_src:
        variants.append((f"baseline {args.baseline_src}", args.baseline_src))
    lat_runs: dict[str | None, list[dict[str, float]]] = {src: [] for _, src in variants}
    with tempfile.TemporaryDirectory() as tmp, throwaway_schema(base) as url:
        sink = fanout.Sink(ports.next(), 0.0)
        settings, db = fanout.build(url, sink.port, args.endpoints, args.concurrency, args.batch)
        config, logs = Path(tmp) / "worker.yaml", Path(tmp) / "workers.log"
        worker_config(config, url, args)
        total = 0
        print(
            f"PostgreSQL ({settings.database.split('@')[-1].split('?')[0]}, a throwaway schema); "
            f"{args.endpoints:,} endpoints per throughput signal; workers {counts} "
            f"(delivery.batch {args.batch}, concurrency {args.concurrency}, poll {args.poll_ms:g} ms); "
            f"{args.runs} runs, counts alternated",
            flush=True,
        )
        try:
            if not args.latency_only:
                for r in range(args.runs):
                    line = []
                    for n in counts if r % 2 == 0 else counts[::-1]:
                        workers = Workers(n, config, logs)
                        try:
                            total += args.endpoints
                            rate = throughput(db, sink, args.endpoints, f"r{r}n{n}", total, args.drain_timeout)
                        finally:
                            workers.stop()
                        rates[n].append(rate)
                        line.append(f"{n} workers {rate:,.0f}/s")
                    best_runs.append(max(rates[n][-1] for n in counts))
                    script = fanout.wrk_script(sink, tmp)
                    wrk_rates.append(fanout.wrk_run(sink, script, connections, args.wrk_threads, args.wrk_seconds))
                    print(f"  run {r + 1}: {', '.join(line)}; wrk -c{connections} {wrk_rates[-1]:,.0f}/s", flush=True)
                medians = {n: statistics.median(rates[n]) for n in counts}
                best = max(counts, key=lambda n: medians[n])
                saturation = medians[best]
            else:
                best, saturation = counts[-1], float("nan")
            offered = args.offered or saturation / 2
            signals_per_s = offered / args.subscribers
            # the same offered load for every variant, alternated run by run; fresh workers each run
            for r in range(args.runs):
                for name, src in variants if r % 2 == 0 else variants[::-1]:
                    workers = Workers(best, config, logs, src)
                    try:
                        if args.warmup_seconds > 0:  # connections, imports, caches: not measured
                            latency(db, sink, signals_per_s, args.subscribers, args.warmup_seconds)
                        lat = latency(db, sink, signals_per_s, args.subscribers, args.latency_seconds)
                    finally:
                        workers.stop()
                    lat_runs[src].append(lat)
                    print(f"  latency run {r + 1}, {latency_line(name, best, lat)}", flush=True)
        finally:
            db.close()
            sink.close()
    meds = {src: {k: statistics.median(x[k] for x in runs) for k in runs[0]} for src, runs in lat_runs.items()}
    med = meds[None]
    fields: dict[str, object] = {"workers": ",".join(str(n) for n in counts)}
    if not args.latency_only:
        wrk_stats = ratios(best_runs, wrk_rates)
        grows = ", ".join(f"{n}: {medians[n]:,.0f}/s" for n in counts)
        stops = next((b for a, b in itertools.pairwise(counts) if medians[b] < medians[a] * GROWTH), None)
        print(
            f"deliveries/s by workers (median of {args.runs}): {grows}; saturation {saturation:,.0f}/s at {best} "
            "workers; " + (f"stops growing at {stops} workers" if stops else "still growing at the largest count")
        )
        print(
            f"best count vs wrk -c{connections} on the same sink ({span(wrk_rates)[0]:,.0f}/s): "
            f"{describe_ratio(wrk_stats)}"
        )
        fields.update(
            deliveries_per_s=",".join(f"{medians[n]:.0f}" for n in counts),
            saturation_workers=best,
            stops_growing_at=stops or "none",
            wrk_per_s=f"{span(wrk_rates)[0]:.0f}",
            ratio_wrk=f"{wrk_stats[0]:.3f}",
        )
    where = "fixed rate" if args.offered else "half saturation"
    for name, src in variants:
        m = meds[src]
        each = ", ".join(f"{x['p99_ms']:.0f}" for x in lat_runs[src])
        print(
            f"{name} at {where} ({m['offered_per_s']:,.0f}/s offered, {m['achieved_per_s']:,.0f}/s committed, "
            f"{m['received_per_s']:,.0f}/s received): commit-to-receipt p50 {m['p50_ms']:.0f} ms, "
            f"p99 {m['p99_ms']:.0f} ms (median of {len(lat_runs[src])} runs, p99s "
            f"{each}); pickup p99 {m['pickup_p99_ms']:.0f} ms, "
            f"spread p99 {m['spread_p99_ms']:.0f} ms"
        )
    fields.update({
        "p99_ms_at_half" if not args.offered else "p99_ms": f"{med['p99_ms']:.0f}",
        "p50_ms_at_half" if not args.offered else "p50_ms": f"{med['p50_ms']:.0f}",
        "pickup_p99_ms": f"{med['pickup_p99_ms']:.0f}",
        "spread_p99_ms": f"{med['spread_p99_ms']:.0f}",
        "offered_per_s": f"{med['offered_per_s']:.0f}",
        "achieved_per_s": f"{med['achieved_per_s']:.0f}",
        "received_per_s": f"{med['received_per_s']:.0f}",
        "latency_workers": best,
        "poll_ms": f"{args.poll_ms:g}",
        "batch": args.batch,
        "subscribers": args.subscribers,
        "lat_missing": int(sum(r["missing"] for runs in lat_runs.values() for r in runs)),
    })  # fmt: skip
    if args.baseline_src:
        base_runs = lat_runs[args.baseline_src]
        stats = ratios([x["p99_ms"] for x in lat_runs[None]], [x["p99_ms"] for x in base_runs])
        m = meds[args.baseline_src]
        print(f"p99 this tree / baseline, per alternated run: {describe_ratio(stats)}")
        fields.update(
            baseline_p99_ms=f"{m['p99_ms']:.0f}",
            baseline_p50_ms=f"{m['p50_ms']:.0f}",
            baseline_pickup_p99_ms=f"{m['pickup_p99_ms']:.0f}",
            **ratio_fields("ratio_p99_vs_baseline", stats),
        )
    print_result(fields)
