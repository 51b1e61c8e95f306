"""Webhook fan-out: throughput against wrk and Apprise on the same receiver, and open-loop latency.

A local sink (uvicorn on 127.0.0.1, its own process) answers every POST, with no delay and
with ``--delay-ms`` added per request. Three things are measured:

1. throughput: signalmint commits one signal whose fan-out writes ``--endpoints`` outbox rows,
   and a worker (in this process, as in the embedded default) drains them: claim, mask, sign
   (Standard Webhooks) and POST, then record every outcome. The worker is warm, as a
   long-running one is: one untimed signal to every endpoint first (its channels built, its
   HTTP pool's connections open), then every run with the same worker, event loop and fan-out
   (:class:`Product`). Reported: deliveries/s, and
   deliveries per CPU-second of this process (``time.process_time`` over the commit and the
   drain: the worker's own cost; the sink runs in its own process);
2. the peers on the same sink: wrk with as many connections as the product keeps in flight
   (``min(delivery.concurrency, the HTTP pool's limit)``, read from the product's settings),
   POSTing the very bytes and headers the product sent (the sink keeps one of its requests);
   and Apprise with the same endpoints as ``json://`` URLs in one notify() call
   (``--no-apprise`` skips it). Ratios are medians of per-run ratios, with their range;
3. latency, open loop: signal i is committed at t0 + i/rate, whatever earlier commits took,
   each to ``--subscribers`` endpoints, for ``--latency-seconds``, with the worker running.
   Latency is from the scheduled commit time to the sink's receipt (so a committer that falls
   behind shows up in it; how far behind it fell is printed too), and from the commit's end.
   The offered and achieved rates are printed beside p50/p90/p99/max and the sample count.

    uv run python bench/fanout.py [--endpoints 10000] [--runs 3] [--latency-seconds 30] [--port-base N]

Last line: RESULT fanout_per_s=... (at --delay-ms) fanout_no_delay_per_s=... per_cpu_s=...
wrk_per_s=... ratio_wrk=... apprise_per_s=... ratio_apprise=... lat_offered_per_s=...
lat_achieved_per_s=... lat_p50_ms=... lat_p99_ms=... lat_samples=... load1=...

With ``--pg`` it measures something else (bench/fanout_workers.py): PostgreSQL in a throwaway
schema and N real ``signalmint run --role worker`` processes, deliveries/s for ``--workers``
1,2,4 and where it stops growing, and p99 from commit to receipt at half the saturation:

    uv run python bench/fanout.py --pg [--pg-url URL] [--workers 1,2,4] [--poll-ms 50] [--endpoints 10000]

For an A/B at the same offered load (the machine's load shifts between runs), fix the rate and
alternate this tree's workers with another checkout's, run by run:

    git archive main | tar -x -C /tmp/base
    uv run python bench/fanout.py --pg --workers 4 --latency-only --offered 500 --baseline-src /tmp/base

Last line: RESULT workers=1,2,4 deliveries_per_s=...,...,... p99_ms_at_half=... (and more)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    Ports,
    add_common,
    describe_ratio,
    percentile,
    print_result,
    ratio_fields,
    ratios,
    require_wrk,
    run_wrk,
    span,
    wait_for_port,
)

HERE = Path(__file__).resolve()
PEPPER = b"fanout-bench-pepper-0123456789"


# --- the sink (its own process) -----------------------------------------------------------------


def serve_sink(port: int, delay: float) -> None:
    import uvicorn

    arrivals: dict[str, float] = {}
    count = [0]
    sample: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        if scope["method"] == "GET":  # the bench asks what arrived (the count, everything, or one request)
            if scope["path"] == "/sample":
                body = json.dumps(sample).encode()
            else:
                full = scope["path"] == "/arrivals"
                body = json.dumps({"count": count[0], **({"arrivals": arrivals} if full else {})}).encode()
            if scope["path"] == "/reset":
                arrivals.clear()
                count[0] = 0
        else:
            now = time.time()
            count[0] += 1
            for name, value in scope["headers"]:
                if name == b"webhook-id":
                    arrivals[value.decode()] = now
            if not sample:
                sample["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
                sample["body"] = b"".join(chunks).decode()
                sample["path"] = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            if delay:
                await asyncio.sleep(delay)
            body = b"ok"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        limit_concurrency=None,
    )


class Sink:
    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.delay = delay
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--sink", str(self.port), str(delay)])
        wait_for_port(port, self.proc, 20)

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{path}") as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    def stats(self, reset: bool = False, full: bool = False) -> dict[str, Any]:
        return self.get("reset" if reset else "arrivals" if full else "stats")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


# --- signalmint ------------------------------------------------------------------------------------


def build(db_path: str, sink_port: int, endpoints: int, concurrency: int, batch: int) -> Any:
    from signalmint.config import DeliveryConfig, PlanConfig, Settings
    from signalmint.records import Automation
    from signalmint.store import Database, sync_automations
    from signalmint.store.migrate import migrate
    from signalmint.store.plans import sync_plans
    from signalmint.store.tables import endpoints as endpoints_table
    from signalmint.store.tables import subscribers, subscriptions

    settings = Settings(
        database=db_path if "://" in db_path else f"sqlite:///{db_path}",  # a path, or a URL (--pg)
        secret="fanout-bench-secret-0123456789",
        delivery=DeliveryConfig(allow_loopback_targets=True, concurrency=concurrency, batch=batch),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])],
    )
    db = Database(settings.database)
    migrate(db)
    now = datetime.now(UTC)
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def people(conn: Any) -> None:  # bulk inserts: the bench measures delivery, not sign-ups
        conn.execute(subscribers.insert(), [
            {"id": i + 1, "email": f"s{i}@bench.invalid", "created_at": now, "confirmed_at": now, "timezone": "UTC"}
            for i in range(endpoints)
        ])  # fmt: skip
        conn.execute(subscriptions.insert(), [
            {"subscriber_id": i + 1, "plan_id": plan.id, "plan_version": plan.version, "state": "active",
             "started_at": now, "origin": "bench", "updated_at": now}
            for i in range(endpoints)
        ])  # fmt: skip
        conn.execute(endpoints_table.insert(), [
            {"subscriber_id": i + 1, "channel": "webhook", "url": f"webhook+http://127.0.0.1:{sink_port}/h?s={i}",
             "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "status": "active", "status_reason": "",
             "created_at": now, "updated_at": now}
            for i in range(endpoints)
        ])  # fmt: skip

    db.write_sync(people)
    return settings, db


def commit(db: Any, fanout: Any, key: str) -> tuple[int, float]:
    from signalmint.engine.runner import commit_tick
    from signalmint.records import Frame, Signal

    now = datetime.now(UTC)
    signal = Signal("spikes", key, now, "volume_spike", 9.0, {"volume": 90000.0, "baseline": 9000.0, "ratio": 10.0})
    started = time.perf_counter()
    stored = db.write_sync(commit_tick, "spikes", Frame.empty(), [signal], None, fanout)
    return stored[0].id, time.perf_counter() - started


def worker_for(settings: Any, db: Any, batch: int | None = None) -> tuple[Any, Any]:
    from signalmint.delivery.runner import channel_context
    from signalmint.delivery.worker import Worker

    context = channel_context(settings)
    worker = Worker(
        settings, db, context, PEPPER,
        batch=batch or settings.delivery.batch, concurrency=settings.delivery.concurrency,
    )  # fmt: skip
    return context, worker


def in_flight(settings: Any) -> int:
    """How many requests the product keeps in flight: the worker's concurrency, capped by its HTTP pool."""

    from signalmint.delivery.runner import channel_context

    async def probe() -> int:
        context = channel_context(settings)
        try:
            return min(int(settings.delivery.concurrency), int(context.http.limit))
        finally:
            await context.http.close()

    return int(run_loop(probe()))


class Product:
    """A warm worker, as a long-running one is: one event loop (uvloop, as ``signalmint run``),
    one HTTP pool, one worker with its channels, one fan-out with its subscriber lists, kept
    across runs. :meth:`warm` sends one untimed signal to every endpoint first, so a timed run
    does not count building 10,000 channels or opening the pool's connections (wrk's are open
    for the whole of its run too)."""

    def __init__(self, settings: Any, db: Any) -> None:
        import uvloop

        from signalmint.delivery.fanout import FanOut

        self.settings, self.db = settings, db
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.context: Any
        self.context, self.worker = self.runner.run(self._make())
        self.fanout = FanOut({"webhook"})

    async def _make(self) -> tuple[Any, Any]:
        return worker_for(self.settings, self.db)

    def warm(self, sink: Sink, endpoints: int, key: str) -> None:
        self.run(sink, endpoints, key)

    def run(self, sink: Sink, endpoints: int, key: str) -> tuple[float, float]:
        """Deliveries per second and per CPU-second of this process (commit + drain)."""
        sink.stats(reset=True)
        sent = self.worker.sent
        cpu = time.process_time()
        _, commit_s = commit(self.db, self.fanout, key)
        seconds = self.runner.run(drain(self.worker, endpoints))
        cpu = time.process_time() - cpu
        arrived, sent = sink.stats()["count"], self.worker.sent - sent
        if sent != endpoints or arrived != endpoints:
            raise SystemExit(f"signalmint: {sent} sent, {arrived} arrived, {endpoints} expected")
        return endpoints / (seconds + commit_s), endpoints / cpu

    def close(self) -> None:
        if self.context is not None:
            self.runner.run(self.context.http.close())
            self.runner.close()
            self.context = None


async def drain(worker: Any, expected: int) -> float:
    started = time.perf_counter()
    handled = 0
    while handled < expected:
        n = await worker.run_once()
        if n == 0:
            await asyncio.sleep(0.01)
        handled += n
    return time.perf_counter() - started


def run_loop(coroutine: Any) -> Any:
    """Run on uvloop, as `signalmint run` does."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def wrk_script(sink: Sink, folder: str) -> str:
    """A wrk Lua script that POSTs what the product sent: its body, its headers, its path."""
    sample = sink.get("sample")
    if not sample:
        raise SystemExit("the sink kept no request from signalmint; run the product first")
    body_path = os.path.join(folder, "wrk_body.json")
    Path(body_path).write_text(sample["body"])
    lines = ['wrk.method = "POST"', f"wrk.path = {json.dumps(sample['path'])}"]
    lines.append(f'local f = io.open({json.dumps(body_path)}, "rb"); wrk.body = f:read("*a"); f:close()')
    for name, value in sample["headers"]:
        if name.lower() not in ("host", "content-length", "connection"):
            lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    script = os.path.join(folder, "wrk_post.lua")
    Path(script).write_text("\n".join(lines) + "\n")
    return script


def wrk_run(sink: Sink, script: str, connections: int, threads: int, seconds: float) -> float:
    sink.stats(reset=True)
    got = run_wrk(
        f"http://127.0.0.1:{sink.port}/", threads=threads, connections=connections, seconds=seconds, script=script
    )
    return got["rps"]


def apprise_run(sink: Sink, endpoints: int) -> float:
    import apprise

    sink.stats(reset=True)
    apobj = apprise.Apprise()
    for i in range(endpoints):
        apobj.add(f"json://127.0.0.1:{sink.port}/h?s={i}")
    started = time.perf_counter()
    ok = apobj.notify(title="AAPL traded 10x its usual volume", body=json.dumps({"volume": 90000.0, "ratio": 10.0}))
    seconds = time.perf_counter() - started
    arrived = sink.stats()["count"]
    if not ok or arrived != endpoints:
        raise SystemExit(f"apprise: ok={ok}, {arrived} of {endpoints} arrived")
    return endpoints / seconds


# --- latency, open loop ----------------------------------------------------------------------------


def latency_run(
    settings: Any, db: Any, sink: Sink, rate: float, subscribers: int, seconds: float, wait: float
) -> dict[str, Any]:
    """Commit signal i at t0 + i/rate (open loop), each to ``subscribers`` endpoints, with the worker running."""
    from signalmint.delivery.fanout import FanOut
    from signalmint.store.outbox import idempotency_id, list_endpoints

    sink.stats(reset=True)
    fanout = FanOut({"webhook"})
    chosen = {e.id for e in db.read_sync(list_endpoints)[:subscribers]}
    fanout.refresh_seconds = 1e9
    db.read_sync(fanout.refresh)
    for sid in list(fanout.endpoints):
        fanout.endpoints[sid] = [e for e in fanout.endpoints[sid] if e.id in chosen]
    scheduled: dict[int, float] = {}  # signal id -> wall time it was due
    committed: dict[int, float] = {}  # signal id -> wall time its commit returned
    late: list[float] = []
    starts: list[float] = []
    n = max(1, round(seconds * rate))
    span_s = [0.0, 0.0]

    async def run() -> None:
        context, worker = worker_for(settings, db, batch=2000)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, idle=0.005))
        t0, wall0 = time.perf_counter(), time.time()
        for i in range(n):
            due = t0 + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            starts.append(time.perf_counter())
            late.append(max(0.0, starts[-1] - due))
            signal_id, _ = await asyncio.to_thread(commit, db, fanout, f"K{i}")
            committed[signal_id] = time.time()
            scheduled[signal_id] = wall0 + i / rate
        span_s[0] = time.perf_counter() - t0
        expected = n * subscribers
        while time.perf_counter() - t0 < span_s[0] + wait:
            if (await asyncio.to_thread(sink.stats))["count"] >= expected:
                break
            await asyncio.sleep(0.2)
        span_s[1] = time.perf_counter() - t0
        stop.set()
        await task
        await context.http.close()

    run_loop(run())
    arrivals = sink.stats(full=True)["arrivals"]
    from_due, from_commit, received = [], [], []
    for signal_id, due in scheduled.items():
        for endpoint_id in chosen:
            got = arrivals.get(idempotency_id(signal_id, endpoint_id))
            if got is not None:
                from_due.append(got - due)
                from_commit.append(got - committed[signal_id])
                received.append(got)
    from_due.sort()
    from_commit.sort()
    first_due = min(scheduled.values())
    delivered_span = (max(received) - first_due) if received else float("nan")
    return {
        "signals": n,
        "expected": n * subscribers,
        "samples": len(from_due),
        "offered_signals_per_s": rate,
        "achieved_signals_per_s": (n - 1) / (starts[-1] - starts[0]) if n > 1 else float("nan"),
        "achieved_deliveries_per_s": len(received) / delivered_span if received else 0.0,
        "late_commits": sum(1 for x in late if x > 1 / rate),
        "max_late_ms": max(late) * 1000,
        **{f"p{q}_ms": percentile(from_due, q) * 1000 for q in (50, 90, 99)},
        "max_ms": from_due[-1] * 1000 if from_due else float("nan"),
        **{f"commit_p{q}_ms": percentile(from_commit, q) * 1000 for q in (50, 99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--endpoints", type=int, default=10_000, help="webhook endpoints of the one signal (throughput)"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=20, help="the slow sink's added delay per request (the fast one adds none)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="the product's delivery.concurrency (requests in flight; default 512, --pg: the product's default); "
        "wrk uses as many connections",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="the product's delivery.batch (rows claimed per round; default 5000, --pg: the product's default)",
    )
    parser.add_argument("--wrk-seconds", type=float, default=5, help="length of each wrk run")
    parser.add_argument(
        "--wrk-threads", type=int, default=2, help="wrk -t (threads); connections are the product's in-flight limit"
    )
    parser.add_argument(
        "--no-apprise", action="store_true", help="skip the Apprise peer (it is slow: ~50 s a run at 10,000 endpoints)"
    )
    parser.add_argument("--rate", type=float, default=50, help="latency phase: signals offered per second (open loop)")
    parser.add_argument("--subscribers", type=int, default=100, help="latency phase: webhook endpoints per signal")
    parser.add_argument("--latency-seconds", type=float, default=30, help="latency phase: how long signals are offered")
    parser.add_argument(
        "--drain-timeout", type=float, default=60, help="latency phase: how long to wait for the last deliveries"
    )
    parser.add_argument(
        "--pg",
        action="store_true",
        help="instead: PostgreSQL and N worker processes (bench/fanout_workers.py): deliveries/s by worker count "
        "and p99 at half saturation",
    )
    parser.add_argument("--pg-url", help="--pg: the PostgreSQL URL (default $SIGNALMINT_TEST_PG); a throwaway schema")
    parser.add_argument("--workers", default="1,2,4", help="--pg: worker process counts to compare (default 1,2,4)")
    parser.add_argument(
        "--poll-ms", type=float, default=None, help="--pg: the workers' delivery.poll in ms (default: the product's)"
    )
    parser.add_argument(
        "--offered",
        type=float,
        default=None,
        help="--pg: the latency phase's offered load in deliveries/s (default: half the measured saturation); "
        "fix it to compare code at the same load",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="--pg: skip the throughput phase (needs --offered); latency with the largest --workers count",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="--pg: a checkout of other code (e.g. `git archive main | tar -x -C DIR`): its workers "
        "(PYTHONPATH=DIR/src) run the latency phase too, alternated run by run with this tree's, same offered load",
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=2, help="--pg: offered load before each latency run, not measured"
    )
    add_common(parser, runs=3)
    args = parser.parse_args()
    if args.pg:
        import fanout_workers

        from signalmint.config import DeliveryConfig

        defaults = DeliveryConfig()
        args.concurrency = args.concurrency or defaults.concurrency
        args.batch = args.batch or defaults.batch
        if args.poll_ms is None:
            args.poll_ms = defaults.poll.total_seconds() * 1000
        require_wrk()
        ports = Ports(args.port_base)
        with tempfile.TemporaryDirectory() as tmp:
            settings, db = build(os.path.join(tmp, "probe.db"), 1, 1, args.concurrency, args.batch)
            db.close()
        fanout_workers.run(args, ports, in_flight(settings))
        return
    args.concurrency = args.concurrency or 512
    args.batch = args.batch or 5000
    if args.subscribers > args.endpoints:
        parser.error("--subscribers cannot exceed --endpoints")
    require_wrk()
    ports = Ports(args.port_base)
    delays = (0.0, args.delay_ms / 1000)
    mine: dict[float, list[float]] = {d: [] for d in delays}
    cpu: dict[float, list[float]] = {d: [] for d in delays}
    wrk_rates: dict[float, list[float]] = {d: [] for d in delays}
    apprise_rates: dict[float, list[float]] = {d: [] for d in delays}
    lat: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sink_ports = {d: ports.next() for d in delays}
        settings, db = build(os.path.join(tmp, "probe.db"), sink_ports[0.0], 1, args.concurrency, args.batch)
        db.close()
        connections = in_flight(settings)
        print(
            f"{args.endpoints:,} endpoints; the product keeps {connections} requests in flight "
            f"(delivery.concurrency {settings.delivery.concurrency}); wrk -t{args.wrk_threads} -c{connections}, "
            f"same sink, same bytes; {args.runs} alternated runs",
            flush=True,
        )
        for delay in delays:
            sink = Sink(sink_ports[delay], delay)
            ms = int(delay * 1000)
            settings, db = build(
                os.path.join(tmp, f"fanout{ms}.db"), sink.port, args.endpoints, args.concurrency, args.batch
            )
            product = Product(settings, db)
            try:
                product.warm(sink, args.endpoints, f"d{ms}warm")
                for run in range(args.runs):
                    rate, per_cpu = product.run(sink, args.endpoints, f"d{ms}r{run}")
                    mine[delay].append(rate)
                    cpu[delay].append(per_cpu)
                    script = wrk_script(sink, tmp)
                    wrk_rates[delay].append(wrk_run(sink, script, connections, args.wrk_threads, args.wrk_seconds))
                    line = (
                        f"  {ms} ms sink, run {run + 1}: signalmint {rate:,.0f}/s ({per_cpu:,.0f} per CPU-second), "
                        f"wrk -c{connections} {wrk_rates[delay][-1]:,.0f}/s"
                    )
                    if not args.no_apprise:
                        apprise_rates[delay].append(apprise_run(sink, args.endpoints))
                        line += f", apprise {apprise_rates[delay][-1]:,.0f}/s"
                    print(line, flush=True)
                product.close()
                if delay == 0.0:
                    lat = latency_run(
                        settings, db, sink, args.rate, args.subscribers, args.latency_seconds, args.drain_timeout
                    )
                    print(
                        f"  latency, open loop: offered {args.rate:g} signals/s x {args.subscribers} subscribers "
                        f"({args.rate * args.subscribers:,.0f} deliveries/s) for {args.latency_seconds:g} s; "
                        f"achieved {lat['achieved_signals_per_s']:.1f} signals/s committed, "
                        f"{lat['achieved_deliveries_per_s']:,.0f} deliveries/s received",
                        flush=True,
                    )
                    print(
                        f"  scheduled-to-receipt over {lat['samples']:,} samples (of {lat['expected']:,}): "
                        f"p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, "
                        f"max {lat['max_ms']:.0f} ms; commit-to-receipt p50 {lat['commit_p50_ms']:.0f} ms, "
                        f"p99 {lat['commit_p99_ms']:.0f} ms",
                        flush=True,
                    )
                    print(
                        f"  committer: {lat['late_commits']} of {lat['signals']} commits started more than one "
                        f"interval late (max {lat['max_late_ms']:.0f} ms)",
                        flush=True,
                    )
            finally:
                product.close()
                db.close()
                sink.close()
    fields: dict[str, object] = {}
    for delay, tag in ((delays[1], ""), (0.0, "_no_delay")):
        ms = int(delay * 1000)
        med, lo, hi = span(mine[delay])
        wrk_stats = ratios(mine[delay], wrk_rates[delay])
        line = (
            f"{ms} ms sink: signalmint {med:,.0f}/s (runs {lo:,.0f}-{hi:,.0f}), "
            f"{span(cpu[delay])[0]:,.0f} deliveries per CPU-second; wrk -c{connections} "
            f"{span(wrk_rates[delay])[0]:,.0f}/s, ratio {describe_ratio(wrk_stats)}"
        )
        fields[f"fanout{tag}_per_s"] = f"{med:.0f}"
        fields[f"per_cpu_s{tag}"] = f"{span(cpu[delay])[0]:.0f}"
        fields[f"wrk{tag}_per_s"] = f"{span(wrk_rates[delay])[0]:.0f}"
        fields.update(ratio_fields(f"ratio_wrk{tag}", wrk_stats))
        if apprise_rates[delay]:
            apprise_stats = ratios(mine[delay], apprise_rates[delay])
            line += f"; apprise {span(apprise_rates[delay])[0]:,.0f}/s, ratio {describe_ratio(apprise_stats, 1)}"
            fields[f"apprise{tag}_per_s"] = f"{span(apprise_rates[delay])[0]:.0f}"
            fields.update(ratio_fields(f"ratio_apprise{tag}", apprise_stats, 2))
        print(line)
    fields.update(
        delay_ms=f"{args.delay_ms:g}",
        wrk_connections=connections,
        lat_offered_per_s=f"{args.rate:g}",
        lat_achieved_per_s=f"{lat['achieved_signals_per_s']:.1f}",
        lat_deliveries_per_s=f"{lat['achieved_deliveries_per_s']:.0f}",
        lat_p50_ms=f"{lat['p50_ms']:.0f}",
        lat_p90_ms=f"{lat['p90_ms']:.0f}",
        lat_p99_ms=f"{lat['p99_ms']:.0f}",
        lat_max_ms=f"{lat['max_ms']:.0f}",
        lat_samples=lat["samples"],
        lat_missing=lat["expected"] - lat["samples"],
        lat_seconds=f"{args.latency_seconds:g}",
    )
    print_result(fields)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        serve_sink(int(sys.argv[2]), float(sys.argv[3]))
    else:
        main()
