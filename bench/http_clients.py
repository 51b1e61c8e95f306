"""Which async HTTP client for the webhook fan-out: httpx.AsyncClient against aiohttp.ClientSession.

A local sink (uvicorn with uvloop and httptools, one worker, in its own process so it does not
share the client's event loop or GIL) answers ``200 {}`` to every POST. Each client sends
``--requests`` POSTs of a 1 KB JSON body with ``--concurrency`` in flight, over one pooled
session whose connection limit equals the concurrency. Runs alternate between the clients
and are repeated; medians are quoted.

    uv run python bench/http_clients.py [--requests 5000] [--concurrency 200] [--runs 3]

Last line: RESULT httpx_rps=... aiohttp_rps=... ratio=... (ratio = aiohttp / httpx)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def drive(post: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> float:
    """Send ``requests`` POSTs with ``concurrency`` workers; return requests per second."""
    remaining = requests
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if await post() != 200:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return requests / elapsed


async def run_httpx(url: str, requests: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30, follow_redirects=False) as client:

        async def post() -> int:
            response = await client.post(url, content=BODY, headers=headers)
            return response.status_code

        return await drive(post, requests, concurrency)


async def run_aiohttp(url: str, requests: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post() -> int:
            async with session.post(url, data=BODY, headers=headers, allow_redirects=False) as response:
                await response.read()
                return response.status

        return await drive(post, requests, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    sink = start_sink(port)
    url = f"http://127.0.0.1:{port}/hook"
    results: dict[str, list[float]] = {"httpx": [], "aiohttp": []}
    try:
        # One short warm-up each (imports, first connections), not counted.
        asyncio.run(run_httpx(url, 500, args.concurrency))
        asyncio.run(run_aiohttp(url, 500, args.concurrency))
        for run in range(args.runs):
            for name, fn in (("httpx", run_httpx), ("aiohttp", run_aiohttp)):
                rps = asyncio.run(fn(url, args.requests, args.concurrency))
                results[name].append(rps)
                print(f"run {run + 1} {name:8s} {rps:9.0f} requests/s")
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    httpx_rps = statistics.median(results["httpx"])
    aiohttp_rps = statistics.median(results["aiohttp"])
    print(f"httpx.AsyncClient      median {httpx_rps:9.0f} requests/s")
    print(f"aiohttp.ClientSession  median {aiohttp_rps:9.0f} requests/s")
    print(f"RESULT httpx_rps={httpx_rps:.0f} aiohttp_rps={aiohttp_rps:.0f} ratio={aiohttp_rps / httpx_rps:.2f}")


if __name__ == "__main__":
    main()
