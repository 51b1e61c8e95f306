"""Which async HTTP client for the webhook fan-out: httpx, aiohttp, and signalmint's own http1.

A local sink (uvicorn with uvloop and httptools, one worker, in its own process so it does not
share the client's event loop or GIL) answers ``200 {}`` to every POST. Each client sends
``--requests`` POSTs of a 1 KB JSON body with ``--concurrency`` in flight, over one pooled
session whose connection limit equals the concurrency, on ``--loop`` (uvloop by default, as
``signalmint run``). Besides requests/s, the client's CPU time per request is measured
(``time.process_time`` of this process; the sink runs in its own). Runs alternate between
the clients and are repeated; medians are quoted.

    uv run python bench/http_clients.py [--requests 5000] [--concurrency 200] [--runs 3] [--loop uvloop]

Last line: RESULT httpx_rps=... aiohttp_rps=... ratio=... http1_rps=... http1_vs_aiohttp=...
aiohttp_cpu_us=... http1_cpu_us=... cpu_ratio=... load1=... (ratio = aiohttp / httpx;
http1_vs_aiohttp = http1 / aiohttp requests/s; cpu_ratio = aiohttp / http1 CPU per request;
each ratio is the median of the per-run ratios, with _min and _max)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop
from _common import Ports, add_common, describe_ratio, print_result, ratio_fields, ratios

from signalmint.delivery.http1 import Http1Pool, encode_request, request_head
from signalmint.net.ssrf import check_url

SINK = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        event = await receive()
        more = event.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""

BODY = json.dumps({"type": "signal.created", "version": 1, "data": {"pad": "x" * 940}}).encode()
assert 1000 <= len(BODY) <= 1100, len(BODY)


def start_sink(port: int) -> subprocess.Popen[bytes]:
    code = SINK + (
        "\nimport uvicorn\n"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False,"
        " loop='uvloop', http='httptools', backlog=4096)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}"), timeout=1)
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sink did not start") from None
            time.sleep(0.05)


async def drive(post: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> tuple[float, float]:
    """Send ``requests`` POSTs with ``concurrency`` workers; requests per second, CPU µs per request."""
    remaining = requests
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if await post() != 200:
                failures += 1

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return requests / elapsed, cpu / requests * 1e6


async def run_httpx(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30, follow_redirects=False) as client:

        async def post() -> int:
            response = await client.post(url, content=BODY, headers=headers)
            return response.status_code

        return await drive(post, requests, concurrency)


async def run_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post() -> int:
            async with session.post(url, data=BODY, headers=headers, allow_redirects=False) as response:
                await response.read()
                return response.status

        return await drive(post, requests, concurrency)


async def run_http1(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    target = check_url(url, allow_loopback=True)
    head = request_head(target, {"content-type": "application/json"})
    async with Http1Pool(allow_loopback=True, limit=concurrency, timeout=30) as pool:

        async def post() -> int:
            response = await pool.request(target, encode_request(head, {}, BODY))
            return response.status

        return await drive(post, requests, concurrency)


CLIENTS = {"httpx": run_httpx, "aiohttp": run_aiohttp, "http1": run_http1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000, help="POSTs per client per run (default 5000)")
    parser.add_argument(
        "--concurrency", type=int, default=200, help="requests in flight, and each client's connection limit (200)"
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (default uvloop)")
    add_common(parser, runs=3)
    args = parser.parse_args()
    loop_factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop

    port = Ports(args.port_base).next()
    sink = start_sink(port)
    url = f"http://127.0.0.1:{port}/hook"
    rps: dict[str, list[float]] = {name: [] for name in CLIENTS}
    cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
    try:
        # One short warm-up each (imports, first connections), not counted.
        for fn in CLIENTS.values():
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(fn(url, 500, args.concurrency))
        for run in range(args.runs):
            for name, fn in CLIENTS.items():
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    r, c = runner.run(fn(url, args.requests, args.concurrency))
                rps[name].append(r)
                cpu[name].append(c)
                print(f"run {run + 1} {name:8s} {r:9.0f} requests/s {c:7.0f} µs CPU/request", flush=True)
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    med = {name: statistics.median(values) for name, values in rps.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for name, label in (
        ("httpx", "httpx.AsyncClient"),
        ("aiohttp", "aiohttp.ClientSession"),
        ("http1", "http1.Http1Pool"),
    ):
        print(f"{label:22s} median {med[name]:9.0f} requests/s {med_cpu[name]:7.0f} µs CPU/request")
    rps_ratio = ratios(rps["aiohttp"], rps["httpx"])
    http1_ratio = ratios(rps["http1"], rps["aiohttp"])
    cpu_ratio = ratios(cpu["aiohttp"], cpu["http1"])
    print(
        f"aiohttp / httpx requests/s {describe_ratio(rps_ratio)}; http1 / aiohttp requests/s "
        f"{describe_ratio(http1_ratio)}; aiohttp / http1 CPU per request {describe_ratio(cpu_ratio)}"
    )
    print_result(
        {
            "httpx_rps": f"{med['httpx']:.0f}",
            "aiohttp_rps": f"{med['aiohttp']:.0f}",
            **ratio_fields("ratio", rps_ratio, 2),
            "http1_rps": f"{med['http1']:.0f}",
            **ratio_fields("http1_vs_aiohttp", http1_ratio, 2),
            "httpx_cpu_us": f"{med_cpu['httpx']:.0f}",
            "aiohttp_cpu_us": f"{med_cpu['aiohttp']:.0f}",
            "http1_cpu_us": f"{med_cpu['http1']:.0f}",
            **ratio_fields("cpu_ratio", cpu_ratio, 2),
        }
    )


if __name__ == "__main__":
    main()
