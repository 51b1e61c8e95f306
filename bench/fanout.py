"""Fan-out: one signal to 10,000 webhook endpoints, against Apprise sending the same notifications.

A local sink (uvicorn on 127.0.0.1, its own process) answers every POST, once with no delay
and once with 20 ms added per request. signalmint commits one signal whose fan-out writes
10,000 outbox rows, and a worker (in this process, as in the embedded default) drains them:
claim, mask, sign (Standard Webhooks) and POST, then record every outcome. Apprise gets the
same 10,000 endpoints as `json://` URLs and one notify() call. A third phase commits 50
signals a second, each to 100 subscribers, for 10 seconds, with the worker running, and
measures commit-to-receipt latency at the sink.

    uv run python bench/fanout.py [--endpoints 10000] [--runs 3]

Last line: RESULT fanout_per_s=... apprise_per_s=... ratio=... p99_commit_to_receipt_ms=...
(fanout_per_s, apprise_per_s and ratio for the 20 ms run; the no-delay figure is printed too.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the sink (its own process) -----------------------------------------------------------------


def serve_sink(port: int, delay: float) -> None:
    import uvicorn

    arrivals: dict[str, float] = {}
    count = [0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["method"] == "GET":  # the bench asks for what arrived (the count, or everything)
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
    def __init__(self, delay: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--sink", str(self.port), str(delay)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("sink did not start")

    def stats(self, reset: bool = False, full: bool = False) -> dict[str, Any]:
        path = "reset" if reset else "arrivals" if full else "stats"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{path}") as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


# --- signalmint ------------------------------------------------------------------------------------


def build(db_path: str, sink_port: int, endpoints: int) -> Any:
    from signalmint.config import DeliveryConfig, PlanConfig, Settings
    from signalmint.records import Automation
    from signalmint.store import Database, sync_automations
    from signalmint.store.plans import sync_plans
    from signalmint.store.tables import endpoints as endpoints_table
    from signalmint.store.tables import subscribers, subscriptions

    settings = Settings(
        database=f"sqlite:///{db_path}",
        secret="fanout-bench-secret-0123456789",
        delivery=DeliveryConfig(allow_loopback_targets=True, concurrency=512, batch=5000),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])],
    )
    db = Database(settings.database)
    db.migrate()
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
    from signalmint.engine import commit_tick
    from signalmint.records import Frame, Signal

    now = datetime.now(UTC)
    signal = Signal("spikes", key, now, "volume_spike", 9.0, {"volume": 90000.0, "baseline": 9000.0, "ratio": 10.0})
    started = time.perf_counter()
    stored = db.write_sync(commit_tick, "spikes", Frame.empty(), [signal], None, fanout)
    return stored[0].id, time.perf_counter() - started


async def drain(settings: Any, db: Any, expected: int) -> tuple[float, int]:
    from signalmint.delivery.runner import channel_context
    from signalmint.delivery.worker import Worker

    context = channel_context(settings)
    worker = Worker(settings, db, context, b"fanout-bench-pepper-0123456789", batch=5000, concurrency=512)
    started = time.perf_counter()
    handled = 0
    try:
        while handled < expected:
            n = await worker.run_once()
            if n == 0:
                await asyncio.sleep(0.01)
            handled += n
    finally:
        await context.http.close()
    return time.perf_counter() - started, worker.sent


def run_loop(coroutine: Any) -> Any:
    """Run on uvloop, as `signalmint run` does."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def signalmint_run(settings: Any, db: Any, sink: Sink, endpoints: int, key: str) -> float:
    from signalmint.delivery.fanout import FanOut

    fanout = FanOut({"webhook"})
    sink.stats(reset=True)
    _, commit_s = commit(db, fanout, key)
    seconds, sent = run_loop(drain(settings, db, endpoints))
    arrived = sink.stats()["count"]
    assert sent == endpoints and arrived == endpoints, (sent, arrived)
    return endpoints / (seconds + commit_s)


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
    assert ok and arrived == endpoints, (ok, arrived)
    return endpoints / seconds


def latency_run(settings: Any, db: Any, sink: Sink, rate: int, subscribers: int, seconds: float) -> float:
    """Commit ``rate`` signals a second, each to ``subscribers`` endpoints, with the worker running."""
    from signalmint.delivery.fanout import FanOut
    from signalmint.delivery.runner import channel_context
    from signalmint.delivery.worker import Worker
    from signalmint.store.outbox import idempotency_id, list_endpoints

    sink.stats(reset=True)
    fanout = FanOut({"webhook"})
    chosen = {e.id for e in db.read_sync(list_endpoints)[:subscribers]}
    fanout.refresh_seconds = 1e9
    db.read_sync(fanout.refresh)
    for sid in list(fanout.endpoints):
        fanout.endpoints[sid] = [e for e in fanout.endpoints[sid] if e.id in chosen]
    commits: dict[int, float] = {}

    async def run() -> None:
        context = channel_context(settings)
        worker = Worker(settings, db, context, b"fanout-bench-pepper-0123456789", batch=2000, concurrency=512)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, idle=0.005))
        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < seconds:
            signal_id, _ = await asyncio.to_thread(commit, db, fanout, f"K{n}")
            commits[signal_id] = time.time()
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        while time.perf_counter() - started < seconds + 30:
            if (await asyncio.to_thread(sink.stats))["count"] >= len(commits) * subscribers:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
        await context.http.close()

    run_loop(run())
    arrivals = sink.stats(full=True)["arrivals"]
    latencies = []
    for signal_id, at in commits.items():
        for endpoint_id in chosen:
            got = arrivals.get(idempotency_id(signal_id, endpoint_id))
            if got is not None:
                latencies.append(got - at)
    expected = len(commits) * subscribers
    assert len(latencies) == expected, (len(latencies), expected)
    latencies.sort()
    return latencies[int(len(latencies) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"fast": [], "fast_apprise": [], "slow": [], "slow_apprise": []}
    with tempfile.TemporaryDirectory() as tmp:
        for delay, label in ((0.0, "fast"), (0.02, "slow")):
            sink = Sink(delay)
            try:
                settings, db = build(os.path.join(tmp, f"{label}.db"), sink.port, args.endpoints)
                for run in range(args.runs):
                    results[label].append(signalmint_run(settings, db, sink, args.endpoints, f"{label}{run}"))
                    results[f"{label}_apprise"].append(apprise_run(sink, args.endpoints))
                    print(
                        f"  {int(delay * 1000)} ms sink, run {run + 1}: signalmint {results[label][-1]:,.0f}/s, "
                        f"apprise {results[label + '_apprise'][-1]:,.0f}/s",
                        flush=True,
                    )
                if label == "fast":
                    p99 = latency_run(settings, db, sink, rate=50, subscribers=100, seconds=10)
                    print(f"  50 signals/s x 100 subscribers for 10 s: p99 commit-to-receipt {p99:.0f} ms", flush=True)
                db.close()
            finally:
                sink.close()
    fast, slow = statistics.median(results["fast"]), statistics.median(results["slow"])
    slow_apprise = statistics.median(results["slow_apprise"])
    print(f"no delay: signalmint {fast:,.0f}/s vs apprise {statistics.median(results['fast_apprise']):,.0f}/s")
    print(
        f"RESULT fanout_per_s={slow:.0f} apprise_per_s={slow_apprise:.0f} ratio={slow / slow_apprise:.1f} "
        f"p99_commit_to_receipt_ms={p99:.0f} fanout_no_delay_per_s={fast:.0f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        serve_sink(int(sys.argv[2]), float(sys.argv[3]))
    else:
        main()
