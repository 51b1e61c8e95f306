"""Shared rate limits for web replicas: PostgreSQL against Redis (and memory as the floor).

Each backend answers ``--ops`` token-bucket checks from ``--concurrency`` tasks on one event
loop (as one web process would), over ``--keys`` keys (a key per client). Measured: checks
per second and the p50/p99 latency of one check, for

- memory: :class:`~signalmint.access.ratelimit.TokenBucketLimiter` (one process, nothing shared);
- postgres: :class:`~signalmint.web.shared_limits.PostgresLimiter` (an atomic upsert on an
  UNLOGGED table, over its own async connections);
- postgres_thread: the same statement through SQLAlchemy on a worker thread (what a
  limiter without its own async connections would cost);
- redis: :class:`~signalmint.web.shared_limits.RedisLimiter` (a Lua script, redis-py asyncio).

Ratios are against Redis measured in the same run. Needs SIGNALMINT_TEST_PG (a database we may
create a schema in) and Redis at ``--redis``.

    SIGNALMINT_TEST_PG=postgresql+psycopg://postgres@127.0.0.1:5432/test uv run python bench/ratelimit_shared.py

The CPU figure is this process's CPU time per check (the web process's cost; the servers run
apart), which matters as much as throughput on a small machine.

Last line: RESULT memory_per_s=... memory_cpu_us=... postgres_per_s=... postgres_cpu_us=...
postgres_thread_per_s=... redis_per_s=... redis_cpu_us=... postgres_p99_ms=... redis_p99_ms=...
ratio_postgres_redis=...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

from _common import percentile, print_result
from sqlalchemy import create_engine, text

from signalmint.access.ratelimit import TokenBucketLimiter
from signalmint.store import Database
from signalmint.store.migrate import migrate
from signalmint.web.shared_limits import Limiter, PostgresLimiter, RedisLimiter


class _ThreadLimiter:
    """The PostgreSQL statement through the blocking ``check`` on a worker thread."""

    def __init__(self, inner: PostgresLimiter) -> None:
        self.inner = inner

    async def acheck(self, key: str | int, rate: float, burst: int, cost: float = 1) -> Any:
        return await asyncio.to_thread(self.inner.check, key, rate, burst, cost)


async def measure(limiter: Any, ops: int, concurrency: int, keys: int) -> tuple[float, float, float, float]:
    """(checks per second, p50 ms, p99 ms, this process's CPU µs per check)."""
    await limiter.acheck("warm", 1000.0, 1000)
    latencies: list[float] = []
    counter = iter(range(ops))

    async def lane() -> None:
        for i in counter:
            started = time.perf_counter()
            await limiter.acheck(f"client:{i % keys}", 1000.0, 1000)
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()
    return ops / elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, cpu / ops * 1e6


async def run(args: argparse.Namespace, url: str) -> dict[str, object]:
    db = Database(url)
    migrate(db)
    pg = PostgresLimiter(db, connections=args.connections)
    await pg.astart()
    redis = RedisLimiter(args.redis, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    backends: dict[str, Limiter | _ThreadLimiter] = {
        "memory": TokenBucketLimiter(),
        "postgres": pg,
        "postgres_thread": _ThreadLimiter(pg),
        "redis": redis,
    }
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in backends}
    try:
        for _ in range(args.runs):
            for name, limiter in backends.items():
                results[name].append(await measure(limiter, args.ops, args.concurrency, args.keys))
    finally:
        await pg.aclose()
        await redis.aclose()
        db.close()
    fields: dict[str, object] = {}
    print(f"{args.ops} checks × {args.runs} runs, {args.concurrency} concurrent, {args.keys} keys")
    best = {name: max(runs) for name, runs in results.items()}  # the best run of each (least noise)
    for name, (per_s, p50, p99, cpu_us) in best.items():
        print(f"  {name:16s} {per_s:10,.0f} checks/s   p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   {cpu_us:5.0f} µs CPU")
        fields[f"{name}_per_s"] = f"{per_s:.0f}"
        fields[f"{name}_cpu_us"] = f"{cpu_us:.0f}"
    fields["postgres_p99_ms"] = f"{best['postgres'][2]:.3f}"
    fields["redis_p99_ms"] = f"{best['redis'][2]:.3f}"
    fields["ratio_postgres_redis"] = f"{best['postgres'][0] / best['redis'][0]:.2f}"
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4, help="PostgresLimiter's async connections")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    base = os.environ.get("SIGNALMINT_TEST_PG")
    if not base:
        sys.exit("set SIGNALMINT_TEST_PG to a PostgreSQL database (a schema is made and dropped in it)")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base else "?"
        fields = asyncio.run(run(args, f"{base}{sep}options=-csearch_path%3D{schema}"))
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print_result(fields)


if __name__ == "__main__":
    main()
