"""GET /api/v1/signals under load, against a bare Starlette endpoint returning the same JSON.

Both servers run in their own process (uvicorn with uvloop and httptools, one worker each);
the load comes from wrk in a third process, with the same settings for both (``-t``, ``-c``,
duration, ``--latency``). The signalmint request goes through everything a paying
subscriber's would: key auth, entitlement filtering and masking, the plan's token bucket
(sized so it does not refuse) and usage metering. The bare endpoint returns the very bytes
signalmint returned (50 rows). Runs alternate and repeat; requests/s, p50 and p99 are
printed for both; the ratio is the median of the per-run ratios, with its range.

    uv run python bench/api.py [--seconds 8] [--runs 3] [--threads 2] [--connections 50] [--port-base N]

Needs wrk (``apt-get install -y wrk``). Last line: RESULT api_rps=... api_p50_ms=...
api_p99_ms=... bare_rps=... bare_p50_ms=... bare_p99_ms=... ratio=... ratio_min=... ratio_max=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    Ports,
    add_common,
    describe_ratio,
    print_result,
    ratio_fields,
    ratios,
    require_wrk,
    run_wrk,
    span,
    wait_for_port,
)

if TYPE_CHECKING:  # for annotations only: this file imports them inside the functions that use them
    from sqlalchemy import Connection
    from starlette.requests import Request
    from starlette.responses import Response

    from signalmint.config import Settings

HERE = Path(__file__).resolve()


# --- the two servers ---------------------------------------------------------------------------


def settings_for(db_path: str) -> Settings:
    from signalmint.config import PlanConfig, Settings

    return Settings(
        database=f"sqlite:///{db_path}",
        secret="bench-secret-0123456789abcdef",
        plans=[
            PlanConfig(id="free", delay="15m", watchlist=3, masked_fields=["volume", "ratio"]),
            PlanConfig(
                id="pro", price=9900, channels=["web", "api"], api_quota=10**12, rate_per_second=10_000, burst=100_000
            ),
        ],
    )


def seed(db_path: str) -> str:
    """Two automations, 2,000 signals, a pro subscriber; returns the pro subscriber's API key."""
    from signalmint.records import Automation, Signal
    from signalmint.store import Database, append_signals, sync_automations
    from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
    from signalmint.store.migrate import migrate
    from signalmint.web.app import create_app
    from signalmint.web.context import AppContext

    db = Database(f"sqlite:///{db_path}")
    migrate(db)
    now = datetime.now(UTC)
    db.write_sync(
        sync_automations,
        [Automation(n, n, "", "synthetic", "volume_spike", {}) for n in ("spikes", "stocks")],
        now,
    )
    batch = []
    for i in range(2000):
        batch.append(
            Signal(
                automation="spikes" if i % 2 else "stocks",
                key=f"SYN{i % 500:03d}",
                time=now - timedelta(minutes=2000 - i),
                kind="volume_spike",
                score=5.0 + i % 7,
                payload={
                    "volume": 50000.0 + i,
                    "baseline": 9000.0,
                    "ratio": 5.5,
                    "z": 8.25,
                    "mad": 800.0,
                    "price_change": 0.0031,
                    "history": 30.0,
                },
            )
        )
    for name in ("spikes", "stocks"):
        db.write_sync(append_signals, name, [s for s in batch if s.automation == name], now)
    app = create_app(settings_for(db_path), db)
    ctx: AppContext = app.state.ctx
    pro = ctx.access.current()[-1]

    def write(conn: Connection) -> int:
        person = ensure_subscriber(conn, "pro@bench.invalid", now)
        confirm_subscriber(conn, person.id, now)
        start_subscription(conn, person.id, pro, now, origin="bench", state="active")
        return person.id

    sid = db.write_sync(write)
    _, key = asyncio.run(ctx.accounts.create_key("bench", subscriber_id=sid))
    db.close()
    return key


def serve_app(db_path: str, port: int) -> None:
    import uvicorn

    from signalmint.store import Database
    from signalmint.web.app import create_app

    db = Database(f"sqlite:///{db_path}")
    uvicorn.run(
        create_app(settings_for(db_path), db),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def serve_bare(body_path: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(body_path).read_bytes()

    async def signals(request: Request) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/signals", signals)])
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.DEVNULL)
    wait_for_port(port, proc, 30)
    return proc


def load(url: str, key: str | None, seconds: float, threads: int, connections: int) -> dict[str, float]:
    """wrk, same settings for both servers; a refused or failed request ends the bench."""
    headers = [f"Authorization: Bearer {key}"] if key else []
    return run_wrk(url, threads=threads, connections=connections, seconds=seconds, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8, help="length of each wrk run (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t, the same for both servers (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c, the same for both servers (default 50)")
    add_common(parser, runs=3)
    args = parser.parse_args()
    require_wrk()
    ports = Ports(args.port_base)
    print(
        f"GET /api/v1/signals?limit=50 vs a bare Starlette endpoint; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.seconds:g}s --latency for both, {args.runs} alternated runs"
    )
    api_runs: list[dict[str, float]] = []
    bare_runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "bench.db")
        key = seed(db_path)
        app_port, bare_port = ports.next(), ports.next()
        app = start(["--serve-app", db_path, str(app_port)], app_port)
        try:
            path = "/api/v1/signals?limit=50"
            request = urllib.request.Request(
                f"http://127.0.0.1:{app_port}{path}", headers={"Authorization": f"Bearer {key}"}
            )
            with urllib.request.urlopen(request) as response:
                body = response.read()
            items = json.loads(body)["items"]
            assert len(items) == 50 and all("volume" in i["payload"] for i in items), "the pro key sees 50 full rows"
            body_path = os.path.join(tmp, "body.json")
            Path(body_path).write_bytes(body)
            bare = start(["--serve-bare", body_path, str(bare_port)], bare_port)
            try:
                api_url, bare_url = f"http://127.0.0.1:{app_port}{path}", f"http://127.0.0.1:{bare_port}{path}"
                load(api_url, key, 2, args.threads, args.connections)  # warm up
                load(bare_url, None, 2, args.threads, args.connections)
                for run in range(args.runs):
                    api_runs.append(load(api_url, key, args.seconds, args.threads, args.connections))
                    bare_runs.append(load(bare_url, None, args.seconds, args.threads, args.connections))
                    a, b = api_runs[-1], bare_runs[-1]
                    print(
                        f"  run {run + 1}: signalmint {a['rps']:,.0f} req/s (p50 {a['p50_ms']:.1f} ms, "
                        f"p99 {a['p99_ms']:.1f} ms), bare {b['rps']:,.0f} req/s (p50 {b['p50_ms']:.1f} ms, "
                        f"p99 {b['p99_ms']:.1f} ms), ratio {a['rps'] / b['rps']:.3f}",
                        flush=True,
                    )
            finally:
                bare.terminate()
                bare.wait()
        finally:
            app.terminate()
            app.wait()
    fields: dict[str, object] = {}
    for name, runs in (("api", api_runs), ("bare", bare_runs)):
        fields[f"{name}_rps"] = f"{span([r['rps'] for r in runs])[0]:.0f}"
        for q in ("p50", "p99"):
            fields[f"{name}_{q}_ms"] = f"{span([r[q + '_ms'] for r in runs])[0]:.2f}"
    stats = ratios([r["rps"] for r in api_runs], [r["rps"] for r in bare_runs])
    fields.update(ratio_fields("ratio", stats))
    fields.update(threads=args.threads, connections=args.connections, seconds=f"{args.seconds:g}", runs=args.runs)
    print(
        f"median: signalmint {fields['api_rps']} req/s (p50 {fields['api_p50_ms']} ms, p99 {fields['api_p99_ms']} ms), "
        f"bare {fields['bare_rps']} req/s (p50 {fields['bare_p50_ms']} ms, p99 {fields['bare_p99_ms']} ms); "
        f"ratio {describe_ratio(stats, 3)}"
    )
    print_result(fields)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-app":
        serve_app(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        serve_bare(sys.argv[2], int(sys.argv[3]))
    else:
        main()
