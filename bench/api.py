"""GET /api/v1/signals under load, against a bare Starlette endpoint returning the same JSON.

Both servers run in their own process (uvicorn with uvloop and httptools, one worker each);
the load comes from a third process: wrk when it is installed, else a bounded asyncio
client. The signalmint request goes through everything a paying subscriber's would: key
auth, entitlement filtering and masking, the plan's token bucket (sized so it does not
refuse) and usage metering. Runs are alternated and repeated; medians are quoted.

    uv run python bench/api.py [--seconds 8] [--runs 3] [--connections 64]

Last line: RESULT api_rps=... bare_rps=... ratio=... api_p99_ms=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the two servers ---------------------------------------------------------------------------


def settings_for(db_path: str):  # type: ignore[no-untyped-def]
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
    from signalmint.web.app import create_app

    db = Database(f"sqlite:///{db_path}")
    db.migrate()
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
    ctx = app.state.ctx
    pro = ctx.access.current()[-1]

    def write(conn):  # type: ignore[no-untyped-def]
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

    async def signals(request):  # type: ignore[no-untyped-def]
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/signals", signals)])
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start")


# --- load ----------------------------------------------------------------------------------------


def wrk(url: str, key: str | None, seconds: float, connections: int) -> tuple[float, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(max(1, round(seconds)))}s", "--latency", url]
    if key:
        command[1:1] = ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    if " 429" in out or "Non-2xx" in out:
        raise SystemExit("some requests failed:\n" + out)
    return rps, float(p99.group(1)) * scale


async def _client(host: str, port: int, request: bytes, until: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    while time.perf_counter() < until:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(head.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        done += 1
    writer.close()
    return done


def asyncio_load(url: str, key: str | None, seconds: float, connections: int) -> tuple[float, float]:
    """A bounded keep-alive HTTP/1.1 load (used when wrk is not installed)."""
    port = int(url.split(":")[2].split("/")[0])
    path = "/" + url.split("/", 3)[3]
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    latencies: list[float] = []

    async def main() -> int:
        until = time.perf_counter() + seconds
        counts = await asyncio.gather(
            *(_client("127.0.0.1", port, request, until, latencies) for _ in range(connections))
        )
        return sum(counts)

    started = time.perf_counter()
    total = asyncio.run(main())
    elapsed = time.perf_counter() - started
    latencies.sort()
    return total / elapsed, latencies[int(len(latencies) * 0.99)] * 1000


def load_in_other_process(url: str, key: str | None, seconds: float, connections: int) -> tuple[float, float]:
    if shutil.which("wrk"):
        return wrk(url, key, seconds, connections)
    out = subprocess.run(
        [sys.executable, str(HERE), "--load", url, key or "", str(seconds), str(connections)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps, p99 = out.split()
    return float(rps), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    tool = "wrk" if shutil.which("wrk") else "a bounded asyncio client"
    print(
        f"GET /api/v1/signals?limit=50 vs a bare Starlette endpoint; load: {tool} in its own process, "
        f"{args.connections} connections, {args.seconds:g}s x {args.runs} runs each"
    )
    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "bench.db")
        key = seed(db_path)
        app_port, bare_port = free_port(), free_port()
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
                api_runs, bare_runs = [], []
                load_in_other_process(f"http://127.0.0.1:{app_port}{path}", key, 2, args.connections)  # warm up
                load_in_other_process(f"http://127.0.0.1:{bare_port}{path}", None, 2, args.connections)
                for run in range(args.runs):
                    api_runs.append(
                        load_in_other_process(f"http://127.0.0.1:{app_port}{path}", key, args.seconds, args.connections)
                    )
                    bare_runs.append(
                        load_in_other_process(
                            f"http://127.0.0.1:{bare_port}{path}", None, args.seconds, args.connections
                        )
                    )
                    print(
                        f"  run {run + 1}: signalmint {api_runs[-1][0]:,.0f} req/s (p99 {api_runs[-1][1]:.1f} ms), "
                        f"bare {bare_runs[-1][0]:,.0f} req/s (p99 {bare_runs[-1][1]:.1f} ms)"
                    )
            finally:
                bare.terminate()
                bare.wait()
        finally:
            app.terminate()
            app.wait()
    api_rps = statistics.median(r for r, _ in api_runs)
    bare_rps = statistics.median(r for r, _ in bare_runs)
    api_p99 = statistics.median(p for _, p in api_runs)
    print(
        f"RESULT api_rps={api_rps:.0f} bare_rps={bare_rps:.0f} ratio={api_rps / bare_rps:.3f} api_p99_ms={api_p99:.1f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-app":
        serve_app(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        serve_bare(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        rps, p99 = asyncio_load(sys.argv[2], sys.argv[3] or None, float(sys.argv[4]), int(sys.argv[5]))
        print(rps, p99)
    else:
        main()
