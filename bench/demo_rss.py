"""Memory of a running `signalmint demo`: RSS sampled every 30 s for ten minutes (by default).

    uv run python bench/demo_rss.py [--seconds 600]

Last line: RESULT demo_rss_mb_max=... demo_rss_mb_end=... seconds=... signals=...
(The foundation issue's limit: under 300 MB after 10 minutes.)
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--every", type=float, default=30)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "signalmint.cli",
                "demo",
                "--port",
                str(port),
                "--db",
                f"{tmp}/demo.db",
                "--for",
                str(args.seconds + 30),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[float] = []
        signals = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds:
                time.sleep(args.every)
                samples.append(rss_mb(proc.pid))
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                        signals = sum(a["signals"] for a in json.load(r)["automations"])
                except OSError:
                    pass
                print(f"  t={time.monotonic() - started:5.0f}s rss={samples[-1]:6.1f} MB signals={signals}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"RESULT demo_rss_mb_max={max(samples):.1f} demo_rss_mb_end={samples[-1]:.1f} "
        f"seconds={args.seconds:.0f} signals={signals}"
    )


if __name__ == "__main__":
    main()
