"""Push ingestion: points accepted per second through ``POST /api/v1/ingest/{automation}``.

Ours: ``signalmint``'s app and engine in one uvicorn process (as ``signalmint run`` does), one
``kind: push`` automation (``threshold`` on the pushed metric, SQLite in a temporary directory):
every request is signed the Standard Webhooks way with a fresh ``webhook-id``, so each one is
verified (HMAC), validated, remembered (one database write) and queued, and the engine commits
its points. The peer, in the same run: a bare Starlette endpoint in its own uvicorn process that
reads the body, parses the JSON and answers 202, with no signature, store or engine. The client
(this process) keeps ``--concurrency`` requests of ``--points`` points in flight for
``--requests`` requests (each worker its own keys, at increasing times, so no row is refused);
a 429 (the engine lags) is sent again after 50 ms and counted. "Accepted" is answered 202:
queued for the engine, which commits the points behind it (its queue holds 1,000 requests).

    uv run python bench/ingest_push.py [--requests 2000] [--points 50] [--concurrency 16] [--runs 3]

Last line: RESULT points_per_s=... bare_per_s=... ratio=... (ratio: the median of per-run ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _common import Ports, add_common, describe_ratio, print_result, ratio_fields, ratios, span, wait_for_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = """
database: sqlite:///{db}
log_level: WARNING
automations:
  - name: pushed
    source: {{kind: push, secret: "{secret}", metrics: [value], queue: 1000}}
    detector: {{kind: threshold, column: value, level: 1000000}}
    retention: null
"""


def serve(kind: str, port: int, workdir: str) -> None:
    """The server process: ours (app + engine) or the bare peer."""
    import uvicorn

    if kind == "bare":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ingest(request: Request) -> JSONResponse:
            body = json.loads(await request.body())
            return JSONResponse({"accepted": len(body["points"]), "duplicate": False}, status_code=202)

        app = Starlette(routes=[Route("/api/v1/ingest/{automation}", ingest, methods=["POST"])])
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
        return
    from signalmint.config import load_settings
    from signalmint.registry import Registry
    from signalmint.serve.wiring import wire_engine
    from signalmint.store import Database
    from signalmint.store.migrate import migrate
    from signalmint.web.app import create_app

    path = Path(workdir) / "signalmint.yaml"
    path.write_text(CONFIG.format(db=Path(workdir) / "bench.db", secret=SECRET))
    registry = Registry.from_entry_points()
    settings = load_settings(path, registry=registry)
    db = Database(settings.database)
    migrate(db)
    engine, _ = wire_engine(settings, db, registry)  # as `signalmint run` does
    app = create_app(settings, db, engine=engine)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def load(url: str, requests: int, points: int, concurrency: int) -> tuple[float, int]:
    """Points accepted per second, and how many 429s were sent again."""
    from signalmint.sources.push import secret_key, sign

    key = secret_key(SECRET)
    todo = iter(range(requests))
    again = 0
    accepted = 0

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        """Its own keys at increasing times, so no row is refused as out of order."""
        nonlocal again, accepted
        last = 0.0
        for _ in todo:
            last = max(time.time(), last + 1e-3)
            at_iso = _iso(last)
            body = json.dumps(
                {
                    "points": [
                        {"key": f"w{w}k{j}", "time": at_iso, "metrics": {"value": float(j)}} for j in range(points)
                    ]
                }
            ).encode()
            msg_id = f"msg_{uuid.uuid4().hex}"
            while True:
                at = int(time.time())
                headers = {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(at),
                    "webhook-signature": sign(key, msg_id, at, body),
                    "content-type": "application/json",
                }
                answer = await client.post(url, content=body, headers=headers)
                if answer.status_code == 429:
                    again += 1
                    await asyncio.sleep(0.05)
                    continue
                if answer.status_code != 202:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text}")
                accepted += answer.json()["accepted"]
                break

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return accepted / elapsed, again


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    add_common(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workdir)
        return
    ports = Ports(args.port_base)
    ours_port, bare_port = ports.next(), ports.next()
    ours_rates: list[float] = []
    bare_rates: list[float] = []
    retried = 0
    with tempfile.TemporaryDirectory() as workdir:
        procs = {
            name: subprocess.Popen(
                [sys.executable, __file__, "--serve", name, "--port", str(port), "--workdir", workdir]
            )
            for name, port in (("ours", ours_port), ("bare", bare_port))
        }
        try:
            for name, port in (("ours", ours_port), ("bare", bare_port)):
                wait_for_port(port, procs[name])
            time.sleep(1.0)  # the engine's automation starts after the port opens
            for run in range(args.runs):
                for name, port, rates in (("ours", ours_port, ours_rates), ("bare", bare_port, bare_rates)):
                    url = f"http://127.0.0.1:{port}/api/v1/ingest/pushed"
                    rate, again = asyncio.run(load(url, args.requests, args.points, args.concurrency))
                    rates.append(rate)
                    retried += again if name == "ours" else 0
                    print(f"run {run + 1} {name}: {rate:,.0f} points/s ({again} requests sent again after 429)")
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(10)
    stats = ratios(ours_rates, bare_rates)
    print(f"ours / bare: {describe_ratio(stats)}")
    print_result(
        {
            "points_per_s": f"{span(ours_rates)[0]:.0f}",
            "bare_per_s": f"{span(bare_rates)[0]:.0f}",
            **ratio_fields("ratio", stats),
            "retried_429": retried,
            "points": args.points,
            "concurrency": args.concurrency,
        }
    )


if __name__ == "__main__":
    main()
