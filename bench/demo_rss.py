"""Memory of a running `signalmint demo` under realistic traffic, sampled over ten minutes (by default).

The demo runs in its own process (both feeds, the engine, the delivery worker and the web app,
as `signalmint demo` starts them). While it runs, this process drives bounded traffic at it:

* API polls: each demo account's key (free, premium, pro) polls ``GET /api/v1/signals?limit=50``,
  pro every ``--poll-every`` seconds, premium every 2x that, free every 6x (the free and premium
  plans' monthly quotas refuse polls once spent: the refusals are counted, not hidden);
* SSE clients: ``--sse-clients`` streams of ``/api/v1/stream`` with the premium and pro keys,
  reconnecting if a stream ends, counting the signals received;
* webhook subscribers: the premium and pro subscribers each register ``--webhooks`` webhook
  endpoints through the API. The demo only dials its own request inspector
  (``/demo/inspect/TOKEN``, in the demo process; its SSRF guard refuses any other loopback
  receiver), so that is the local receiver; the bench reads each endpoint's delivery log every
  5 s and counts the distinct deliveries marked sent.

RSS (``/proc/PID/status`` VmRSS) and the demo's CPU time are sampled every ``--every`` seconds.
There is no peer: the figure is compared with the limit, 300 MB after ten minutes.

    uv run python bench/demo_rss.py [--seconds 600] [--every 30] [--port-base N]

Last line: RESULT demo_rss_mb_max=... demo_rss_mb_end=... demo_rss_mb_first=... limit_mb=300
seconds=... signals=... api_ok=... api_refused=... sse_clients=... sse_events=...
webhook_endpoints=... webhook_deliveries=... demo_cpu_s=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _common import Ports, add_common, print_result, process_cpu_seconds, wait_for_port

LIMIT_MB = 300


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Traffic:
    """Bounded load on the demo: every loop ends at ``deadline``."""

    def __init__(self, base: str, keys: dict[str, str], deadline: float) -> None:
        self.base = base
        self.keys = keys
        self.deadline = deadline
        self.api: Counter[int] = Counter()
        self.sse_events = 0
        self.sse_connects = 0
        self.endpoints: list[tuple[str, int]] = []  # (role, endpoint id)
        self.delivered: set[int] = set()

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    async def poll(self, client: httpx.AsyncClient, role: str, every: float) -> None:
        while time.monotonic() < self.deadline:
            try:
                r = await client.get(f"{self.base}/api/v1/signals?limit=50", headers=self.auth(role), timeout=10)
                self.api[r.status_code] += 1
            except httpx.HTTPError:
                self.api[0] += 1
            await asyncio.sleep(every)

    async def sse(self, client: httpx.AsyncClient, role: str) -> None:
        headers = {**self.auth(role), "Accept": "text/event-stream"}
        while time.monotonic() < self.deadline:
            try:
                async with client.stream("GET", f"{self.base}/api/v1/stream", headers=headers, timeout=None) as r:
                    self.sse_connects += 1
                    if r.status_code != 200:
                        self.api[r.status_code] += 1
                        await asyncio.sleep(5)
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith("event: signal"):
                            self.sse_events += 1
                        if time.monotonic() >= self.deadline:
                            return
            except httpx.HTTPError:
                await asyncio.sleep(1)

    async def register(self, client: httpx.AsyncClient, webhooks: int) -> None:
        for role in ("premium", "pro"):
            for i in range(webhooks):
                url = f"{self.base}/demo/inspect/bench-{role}-{i:02d}"
                r = await client.post(
                    f"{self.base}/api/v1/me/endpoints",
                    headers=self.auth(role),
                    json={"channel": "webhook", "url": url},
                    timeout=10,
                )
                if r.status_code != 201:
                    raise SystemExit(f"could not register a webhook for {role}: {r.status_code} {r.text}")
                self.endpoints.append((role, int(r.json()["id"])))

    async def read_logs(self, client: httpx.AsyncClient) -> None:
        while True:
            for role, endpoint_id in self.endpoints:
                try:
                    r = await client.get(
                        f"{self.base}/api/v1/me/endpoints/{endpoint_id}/deliveries", headers=self.auth(role), timeout=10
                    )
                    if r.status_code == 200:
                        self.delivered.update(d["id"] for d in r.json()["items"] if d["status"] == "sent")
                except httpx.HTTPError:
                    pass
            if time.monotonic() >= self.deadline:
                return
            await asyncio.sleep(5)


async def drive(proc: subprocess.Popen[bytes], base: str, keys: dict[str, str], args: argparse.Namespace) -> None:
    started = time.monotonic()
    traffic = Traffic(base, keys, started + args.seconds)
    samples: list[float] = []
    signals = 0
    limits = httpx.Limits(max_connections=args.sse_clients + 16)
    async with httpx.AsyncClient(limits=limits) as client:
        await traffic.register(client, args.webhooks)
        tasks = [
            asyncio.create_task(traffic.poll(client, "pro", args.poll_every)),
            asyncio.create_task(traffic.poll(client, "premium", args.poll_every * 2)),
            asyncio.create_task(traffic.poll(client, "free", args.poll_every * 6)),
            asyncio.create_task(traffic.read_logs(client)),
            *(asyncio.create_task(traffic.sse(client, ("premium", "pro")[i % 2])) for i in range(args.sse_clients)),
        ]
        try:
            while time.monotonic() - started < args.seconds:
                await asyncio.sleep(min(args.every, max(0.0, started + args.seconds - time.monotonic())))
                if proc.poll() is not None:
                    raise SystemExit(f"the demo exited with {proc.returncode}")
                samples.append(rss_mb(proc.pid))
                try:
                    r = await client.get(f"{base}/healthz", timeout=5)
                    signals = sum(a["signals"] for a in r.json()["automations"])
                except httpx.HTTPError:
                    pass
                ok = sum(n for code, n in traffic.api.items() if 200 <= code < 300)
                print(
                    f"  t={time.monotonic() - started:5.0f}s rss={samples[-1]:6.1f} MB signals={signals} "
                    f"api_ok={ok} api_other={sum(traffic.api.values()) - ok} sse_events={traffic.sse_events} "
                    f"webhook_sent={len(traffic.delivered)} cpu={process_cpu_seconds(proc.pid):.1f}s",
                    flush=True,
                )
        finally:
            done, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise failure
    ok = sum(n for code, n in traffic.api.items() if 200 <= code < 300)
    print(f"API answers by status: {dict(sorted(traffic.api.items()))} (0: connection errors)")
    print(
        f"max RSS {max(samples):.1f} MB (limit {LIMIT_MB} MB), at the end {samples[-1]:.1f} MB, "
        f"first sample {samples[0]:.1f} MB"
    )
    print_result(
        {
            "demo_rss_mb_max": f"{max(samples):.1f}",
            "demo_rss_mb_end": f"{samples[-1]:.1f}",
            "demo_rss_mb_first": f"{samples[0]:.1f}",
            "limit_mb": LIMIT_MB,
            "seconds": f"{args.seconds:.0f}",
            "signals": signals,
            "api_ok": ok,
            "api_refused": sum(traffic.api.values()) - ok,
            "sse_clients": args.sse_clients,
            "sse_events": traffic.sse_events,
            "webhook_endpoints": len(traffic.endpoints),
            "webhook_deliveries": len(traffic.delivered),
            "demo_cpu_s": f"{process_cpu_seconds(proc.pid):.1f}",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="how long the demo runs under traffic (600)")
    parser.add_argument("--every", type=float, default=30, help="seconds between RSS samples (30)")
    parser.add_argument("--poll-every", type=float, default=1.0, help="seconds between the pro key's API polls (1)")
    parser.add_argument("--sse-clients", type=int, default=4, help="open /api/v1/stream clients (4; at most 16)")
    parser.add_argument("--webhooks", type=int, default=3, help="webhook endpoints per paying subscriber (3)")
    add_common(parser, runs=None)
    args = parser.parse_args()
    if not 0 <= args.sse_clients <= 16:
        parser.error("--sse-clients must be between 0 and 16 (8 live streams per subscriber, two subscribers)")
    port = Ports(args.port_base).next()
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys.json"
        command = [
            sys.executable, "-m", "signalmint.cli", "demo", "--port", str(port), "--db", f"{tmp}/demo.db",
            "--for", str(args.seconds + 60), "--keys-file", str(keys_file),
        ]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, proc, 60)
            deadline = time.monotonic() + 30
            while not keys_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            accounts: list[dict[str, Any]] = json.loads(keys_file.read_text())["accounts"]
            keys = {a["role"]: a["api_key"] for a in accounts}
            print(
                f"signalmint demo on port {port} (pid {proc.pid}) for {args.seconds:g} s: API polls by 3 keys, "
                f"{args.sse_clients} SSE clients, {2 * args.webhooks} webhook endpoints to the demo's inspector; "
                f"RSS every {args.every:g} s",
                flush=True,
            )
            asyncio.run(drive(proc, f"http://127.0.0.1:{port}", keys, args))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
