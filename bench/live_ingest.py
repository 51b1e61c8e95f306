"""Live ingest: a candle's close to its signal committed, with the ``ccxt`` source polling a stand-in Binance.

The stand-in (``signalmint.testing.exchange``, its own process) serves 1,000 USDT markets of
one-minute candles in compressed time (``--speed`` virtual seconds per real second; a share
``--spike-rate`` of candles carries 10x volume). In this process the engine runs one
automation: the ``ccxt`` source (binance, ``urls: {public: ...}``, within binance's request
weight a minute (ccxt's ``rateLimit``, ``--rate-limit`` ms, 50 by default) on the compressed
clock, ``delay: 0``, ``batch: --batch`` real seconds) -> ``volume_spike`` (window 30) ->
SQLite. It backfills the warm-up, then follows ``--candles`` live candles. Measured, in real
milliseconds from the moment the stand-in's clock reaches a candle's close:

- ``signal``: until the signal of a spiked candle is committed (an engine listener);
- ``tick``: until the whole tick (all symbols) is committed (with ``batch``, its last batch);
- CPU time of this process per 1,000 candles during the live phase (the stand-in excluded).

Then the same automation with ``stream: websocket`` (ccxt.pro on the stand-in's Binance-shaped
kline websocket, ``urls: {ws: {spot: ...}}``; REST steps in for a symbol ``--ws-delay`` real
seconds after a close), measured the same way, with the live REST requests it still made.

The peer, in the same run against the same stand-in: a raw ccxt loop (the same client, ccxt's
own per-minute limiter (``rateLimiterAlgorithm: rollingWindow``) at the same budget on the
compressed clock, ``fetch_ohlcv`` for every symbol concurrently at each close, no validation,
detector or store), timed from close to all candles in hand, and its CPU per 1,000 candles.

    uv run python bench/live_ingest.py [--symbols 1000] [--candles 3] [--speed 6] [--batch 0.02]
        [--rate-limit 50] [--port-base 8960]

Last line: RESULT symbols=... p50_ms=... p99_ms=... cpu_ms_per_1000=... peer_p99_ms=...
peer_cpu_ms_per_1000=... ratio=... (p50/p99 of the signal latency; ratio = CPU per 1,000
candles over the peer's) ws_p50_ms=... ws_p99_ms=... ws_cpu_ms_per_1000=... ws_to_poll_p99=...
ws_to_poll_cpu=... (the websocket run, and its ratios to polling).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

MINUTE = 60.0


class CompressedClock:
    """Virtual seconds since the epoch running ``speed`` times faster than real time."""

    def __init__(self, epoch: float, origin: float, speed: float) -> None:
        self.epoch, self.origin, self.speed = epoch, origin, speed

    def __call__(self) -> float:
        return self.origin + (time.time() - self.epoch) * self.speed

    def real(self, virtual: float) -> float:
        """The real time at which the clock shows ``virtual``."""
        return self.epoch + (virtual - self.origin) / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_exchange(args: argparse.Namespace, port: int, clock: CompressedClock) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "signalmint.testing.exchange", "--port", str(port)]
    cmd += ["--symbols", str(args.symbols), "--epoch", repr(clock.epoch), "--origin", repr(clock.origin)]
    cmd += ["--speed", str(args.speed), "--spike-rate", str(args.spike_rate)]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/time", timeout=1).read()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the stand-in exchange did not start") from None
            time.sleep(0.2)


async def run_signalmint(
    args: argparse.Namespace, url: str, clock: CompressedClock, stream: str = "poll"
) -> dict[str, Any]:
    from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
    from signalmint.engine.runner import commit_tick
    from signalmint.registry import Registry
    from signalmint.serve.wiring import wire_engine
    from signalmint.sources.ccxt_candles import CcxtCandles
    from signalmint.store import Database
    from signalmint.store.migrate import migrate

    made: list[CcxtCandles] = []

    class CompressedCcxt(CcxtCandles):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw, clock=clock, sleep=clock.sleep)
            made.append(self)

    registry = Registry.from_entry_points()
    registry.sources["ccxt"] = CompressedCcxt
    symbols = [f"S{i:04d}/USDT" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(db)
        settings = Settings(
            database=db.url,
            checkpoint_every=timedelta(seconds=5),
            automations=[
                AutomationConfig(
                    name="crypto",
                    source=PluginConfig(
                        kind="ccxt",
                        exchange="binance",
                        symbols=symbols,
                        urls={"public": url, "ws": {"spot": url.replace("http", "ws").replace("/api/v3", "/ws")}},
                        stream=stream,
                        rate_limit=args.rate_limit,
                        delay=0.0 if stream == "poll" else args.ws_delay * args.speed,
                        grace=10.0,
                        batch=None if args.batch < 0 else args.batch * args.speed,
                    ),
                    detector=DetectorConfig(kind="volume_spike", window=30, ratio=3, z=4),
                    retention=None,
                )
            ],
        )
        engine, _ = wire_engine(settings, db, registry)  # as `signalmint run` does
        signal_ms: list[float] = []
        tick_ms: list[float] = []
        start_boundary = clock() // MINUTE * MINUTE  # the backfill ends with the candle closing here
        live = {"first": float("inf"), "cpu0": 0.0, "bars": 0}  # set once the backfill is committed
        bars_at: dict[float, int] = {}  # live close -> bars committed (a tick may commit in batches)
        done = asyncio.Event()
        write = db.write

        async def timed_write(fn: Any, *a: Any, **kw: Any) -> Any:
            """Every commit of bars, timed as it returns (the engine awaits it); a tick is whole
            once every symbol's bar of it is committed."""
            result = await write(fn, *a, **kw)
            if fn is commit_tick:
                close = a[1].times[0].astype("datetime64[ms]").astype("int64") / 1000
                if live["first"] == float("inf") and close >= start_boundary:
                    live.update(first=(clock() // MINUTE + 1) * MINUTE, cpu0=time.process_time())
                    live["requests0"] = made[-1].requests
                elif close >= live["first"]:
                    live["bars"] += len(a[1])
                    bars_at[close] = bars_at.get(close, 0) + len(a[1])
                    if bars_at[close] == args.symbols:
                        tick_ms.append((time.time() - clock.real(close)) * 1000)
                        if close >= live["first"] + (args.candles - 1) * MINUTE:
                            done.set()
            return result

        db.write = timed_write  # type: ignore[method-assign]

        def on_signals(stored: list[Any]) -> None:
            now = time.time()
            for s in stored:
                close = s.time.timestamp()
                if close >= live["first"]:
                    signal_ms.append((now - clock.real(close)) * 1000)

        engine.listeners.append(on_signals)
        await engine.start()
        try:
            async with asyncio.timeout(args.candles * MINUTE / args.speed + 300):
                await done.wait()
            cpu = time.process_time() - live["cpu0"]
            live_bars = int(live["bars"])
            bars0 = engine.statuses()[0].bars - live_bars
            requests = made[-1].requests - int(live["requests0"])
        finally:
            await engine.stop()
            db.close()
    return {
        "signal_ms": signal_ms,
        "tick_ms": tick_ms,
        "cpu_ms_per_1000": cpu * 1000 / max(live_bars, 1) * 1000,
        "live_bars": live_bars,
        "signals": len(signal_ms),
        "backfill_bars": bars0,
        "live_requests": requests,
    }


async def run_ccxt_loop(args: argparse.Namespace, url: str, clock: CompressedClock) -> dict[str, Any]:
    """The peer: ccxt's fetch_ohlcv for every symbol at each close, nothing else."""
    import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]

    config: dict[str, Any] = {"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["spot"]}}}
    if args.rate_limit is None or args.rate_limit > 0:  # ccxt's per-minute budget, on the compressed clock
        config["rateLimiterAlgorithm"] = "rollingWindow"
        config["rollingWindowSize"] = 60_000 / args.speed
        config["rateLimit"] = (args.rate_limit or ccxt_async.binance().rateLimit) / args.speed
    else:
        config["rateLimit"] = 0
    ex = ccxt_async.binance(config)
    ex.urls["api"] = {**ex.urls["api"], "public": url}
    symbols = [f"S{i:04d}/USDT" for i in range(args.symbols)]
    tick_ms: list[float] = []
    candles = 0
    try:
        await ex.load_markets()
        close = (clock() // MINUTE + 1) * MINUTE
        cpu0 = time.process_time()
        for _ in range(args.candles):
            await clock.sleep(close - clock())
            since = int((close - MINUTE) * 1000)
            got = await asyncio.gather(*(ex.fetch_ohlcv(s, "1m", since=since, limit=2) for s in symbols))
            candles += sum(1 for rows in got for row in rows if row[0] == since)
            tick_ms.append((time.time() - clock.real(close)) * 1000)
            close += MINUTE
        cpu = time.process_time() - cpu0
    finally:
        await ex.close()
    return {"tick_ms": tick_ms, "cpu_ms_per_1000": cpu * 1000 / max(candles, 1) * 1000, "candles": candles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000, help="markets served and followed")
    parser.add_argument("--candles", type=int, default=3, help="live candles measured per run")
    parser.add_argument(
        "--speed", type=float, default=6.0, help="virtual seconds per real second (6: a candle every 10 s)"
    )
    parser.add_argument("--spike-rate", type=float, default=0.02, help="share of candles with 10x volume")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="ccxt's rateLimit in ms (default: binance's, 50, i.e. its 6,000 request weight a minute; 0: no limit)",
    )
    parser.add_argument(
        "--batch",
        type=float,
        default=0.02,
        help="real seconds a live tick's first candles wait for more before they commit (negative: whole ticks)",
    )
    parser.add_argument(
        "--ws-delay",
        type=float,
        default=1.0,
        help="websocket run: real seconds after a close before REST steps in (the source's default: 1)",
    )
    parser.add_argument("--port-base", type=int, default=8960, help="the stand-in exchange listens here")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")

    epoch = time.time()
    origin = (epoch // MINUTE) * MINUTE + 5  # 55 virtual seconds for start-up and backfill
    clock = CompressedClock(epoch, origin, args.speed)
    proc = start_exchange(args, args.port_base, clock)
    url = f"http://127.0.0.1:{args.port_base}/api/v3"
    try:
        mine = asyncio.run(run_signalmint(args, url, clock, "poll"))
        ws = asyncio.run(run_signalmint(args, url, clock, "websocket"))
        peer = asyncio.run(run_ccxt_loop(args, url, clock))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    p50, p99 = percentile(mine["signal_ms"], 0.5), percentile(mine["signal_ms"], 0.99)
    ws_p50, ws_p99 = percentile(ws["signal_ms"], 0.5), percentile(ws["signal_ms"], 0.99)
    print(
        f"signalmint, stream: poll: backfill {mine['backfill_bars']} bars, then {mine['live_bars']} live candles, "
        f"{mine['signals']} signals on live candles"
    )
    print(f"  close -> signal committed: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    ticks = mine["tick_ms"]
    print(f"  close -> whole tick committed: {', '.join(f'{t:.0f}' for t in ticks)} ms")
    print(f"  CPU per 1,000 candles: {mine['cpu_ms_per_1000']:.0f} ms; {mine['live_requests']} live REST requests")
    print(
        f"signalmint, stream: websocket: backfill {ws['backfill_bars']} bars, then {ws['live_bars']} live candles, "
        f"{ws['signals']} signals on live candles"
    )
    print(f"  close -> signal committed: p50 {ws_p50:.0f} ms, p99 {ws_p99:.0f} ms")
    print(f"  close -> whole tick committed: {', '.join(f'{t:.0f}' for t in ws['tick_ms'])} ms")
    print(f"  CPU per 1,000 candles: {ws['cpu_ms_per_1000']:.0f} ms; {ws['live_requests']} live REST requests")
    ws_ratio = ws["cpu_ms_per_1000"] / mine["cpu_ms_per_1000"]
    print(f"websocket / poll: p99 {ws_p99 / p99:.2f}x, CPU {ws_ratio:.2f}x")
    peer_p99 = max(peer["tick_ms"]) if peer["tick_ms"] else float("nan")
    in_hand = ", ".join(f"{t:.0f}" for t in peer["tick_ms"])
    print(f"raw ccxt loop: {peer['candles']} candles; close -> all in hand: {in_hand} ms")
    median_tick = statistics.median(peer["tick_ms"])
    print(f"  CPU per 1,000 candles: {peer['cpu_ms_per_1000']:.0f} ms (median tick {median_tick:.0f} ms)")
    ratio = mine["cpu_ms_per_1000"] / peer["cpu_ms_per_1000"]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"RESULT symbols={args.symbols} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"cpu_ms_per_1000={mine['cpu_ms_per_1000']:.0f} "
        f"peer_p99_ms={peer_p99:.0f} peer_cpu_ms_per_1000={peer['cpu_ms_per_1000']:.0f} ratio={ratio:.2f} "
        f"ws_p50_ms={ws_p50:.0f} ws_p99_ms={ws_p99:.0f} ws_cpu_ms_per_1000={ws['cpu_ms_per_1000']:.0f} "
        f"ws_to_poll_p99={ws_p99 / p99:.2f} ws_to_poll_cpu={ws_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
