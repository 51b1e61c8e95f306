"""Helpers shared by the benchmarks in bench/: ports, load, ratios, percentiles, CPU time, wrk, RESULT.

Conventions every bench follows (see README, "Benchmarks"):

* it measures itself and a peer in the same run, under the same conditions, alternating runs;
* a ratio is the median of the per-run ratios (ours / peer of the same run), printed with its
  range (``ratio_min``, ``ratio_max``), never a ratio of two medians;
* ``--port-base N`` puts every port the bench opens at N, N+1, ... (default: free ports the
  kernel picks), so several benches can run side by side without clashing;
* the last line is ``RESULT key=value ...`` with the figures, the peers, the ratios and the
  machine's load average (``load1 load5 load15``, from ``os.getloadavg``) at the end of the run.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def add_common(
    parser: argparse.ArgumentParser, *, runs: int | None = 3, ports: bool = True, runs_help: str | None = None
) -> None:
    """``--runs`` (unless ``runs`` is None) and ``--port-base``, the options every bench has."""
    if runs is not None:
        text = runs_help or "alternated runs of each variant; medians and per-run ratios are quoted"
        parser.add_argument("--runs", type=int, default=runs, help=f"{text} (default {runs})")
    parser.add_argument(
        "--port-base",
        type=int,
        default=0,
        help=(
            "open this bench's ports at N, N+1, ... so several benches can run side by side (default: free ports)"
            if ports
            else "accepted for uniformity; this bench opens no port of its own"
        ),
    )


class Ports:
    """Ports for one bench: ``base``, ``base + 1``, ... (each checked free), or kernel-chosen when base is 0."""

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.used = 0

    def next(self) -> int:
        if not self.base:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return int(s.getsockname()[1])
        port = self.base + self.used
        self.used += 1
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                raise SystemExit(f"port {port} (from --port-base {self.base}) is busy: {exc}") from None
        return port


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None, seconds: float = 30
) -> None:
    """Wait until something accepts on 127.0.0.1:port; exit with a message if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    if proc is not None:
        proc.kill()
    raise SystemExit(f"nothing listens on port {port} after {seconds:g} s")


# --- statistics ----------------------------------------------------------------------------------


def ratios(mine: Sequence[float], peer: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-run ratios ``mine[i] / peer[i]`` (runs paired in order)."""
    if len(mine) != len(peer) or not mine:
        raise ValueError(f"runs do not pair up: {len(mine)} and {len(peer)}")
    each = [m / p if p else float("nan") for m, p in zip(mine, peer, strict=True)]
    return statistics.median(each), min(each), max(each)


def span(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(values), min(values), max(values)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def describe_ratio(stats: tuple[float, float, float], digits: int = 2) -> str:
    med, lo, hi = stats
    return f"{med:.{digits}f}x (runs {lo:.{digits}f}-{hi:.{digits}f}x)"


def ratio_fields(name: str, stats: tuple[float, float, float], digits: int = 3) -> dict[str, str]:
    med, lo, hi = stats
    return {name: f"{med:.{digits}f}", f"{name}_min": f"{lo:.{digits}f}", f"{name}_max": f"{hi:.{digits}f}"}


# --- the machine ---------------------------------------------------------------------------------


def load_fields() -> dict[str, str]:
    one, five, fifteen = os.getloadavg()
    return {"load1": f"{one:.2f}", "load5": f"{five:.2f}", "load15": f"{fifteen:.2f}", "cpus": str(os.cpu_count())}


def result_line(fields: dict[str, object]) -> str:
    """``RESULT k=v ...`` with the machine's load average appended; floats keep what the caller formatted."""
    parts = {**{k: str(v) for k, v in fields.items()}, **load_fields()}
    return "RESULT " + " ".join(f"{k}={v}" for k, v in parts.items())


def print_result(fields: dict[str, object]) -> None:
    one, five, fifteen = os.getloadavg()
    print(f"load average at the end: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs", flush=True)
    print(result_line(fields), flush=True)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process so far (Linux ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- wrk -------------------------------------------------------------------------------------------


WRK_MISSING = (
    "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`; this bench needs it"
)


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(WRK_MISSING)
    return found


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, total requests, non-2xx and socket errors, and (with --latency) p50/p90/p99 in ms."""
    got: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise SystemExit("could not read wrk's output:\n" + out)
    got["rps"], got["requests"] = float(rps.group(1)), float(total.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    got["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    got["socket_errors"] = float(sum(int(g) for g in errors.groups())) if errors else 0.0
    for q in (50, 75, 90, 99):
        found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if found:
            got[f"p{q}_ms"] = _ms(found.group(1), found.group(2))
    return got


def run_wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: float,
    headers: Iterable[str] = (),
    script: str | None = None,
    timeout: float = 30,
) -> dict[str, float]:
    """wrk in its own process with ``--latency``; exits with the output if any request failed or timed out.

    ``timeout`` (seconds) replaces wrk's default of 2 s, which a loaded receiver can exceed at
    hundreds of connections; the product's own webhook timeout is longer than that too.
    """
    command = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    command.append(f"--timeout={max(1, round(timeout))}s")
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", script]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    got = parse_wrk(out)
    if got["non2xx"] or got["socket_errors"]:
        raise SystemExit(
            f"wrk saw failures ({got['non2xx']:.0f} non-2xx, {got['socket_errors']:.0f} socket errors):\n{out}"
        )
    return got
