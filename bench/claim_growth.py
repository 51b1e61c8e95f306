"""Outbox claim cost as rows are delivered, on PostgreSQL: against the same claim just after VACUUM.

A worker's claim must cost the same after a million deliveries as after the first. Rows move
pending -> sending -> sent, and each move leaves an index entry behind until a vacuum removes
it; a claim that reads those entries grows slower with every row delivered. This bench drives
one signal of ``--subscribers`` rows at a time through the real claim
(:func:`signalmint.store.outbox_claim.claim_loaded`, as a worker calls it) and marks them sent,
with autovacuum off on the throwaway schema's outbox, so nothing cleans up behind it. Every
``--step`` rows delivered, up to ``--rows``, it times ``--samples`` claims of a fresh signal's
rows (the median is quoted). At the end it VACUUMs the outbox and times as many claims again:
the peer, the same claim on the same table with every dead entry gone. Printed: the claim at
each checkpoint, its growth (last / first checkpoint) and last / vacuumed.

    SIGNALMINT_TEST_PG=postgresql+psycopg://postgres@127.0.0.1:5432/test uv run python bench/claim_growth.py

Last line: RESULT rows=... claim_ms_first=... claim_ms_last=... vacuumed_ms=... growth=... ratio_vacuumed=... load1=...
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fanout
from _common import add_common, print_result
from fanout_workers import throwaway_schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", help="the PostgreSQL URL (default $SIGNALMINT_TEST_PG); a throwaway schema")
    parser.add_argument("--rows", type=int, default=100_000, help="rows delivered in all (default 100,000)")
    parser.add_argument("--step", type=int, default=20_000, help="rows delivered between checkpoints (default 20,000)")
    parser.add_argument("--subscribers", type=int, default=100, help="rows per signal, claimed together (default 100)")
    parser.add_argument("--samples", type=int, default=30, help="claims timed per checkpoint and variant (default 30)")
    add_common(parser, runs=None, ports=False)
    args = parser.parse_args()
    base = args.pg_url or os.environ.get("SIGNALMINT_TEST_PG")
    if not base:
        raise SystemExit("claim_growth needs a PostgreSQL URL: --pg-url or SIGNALMINT_TEST_PG")

    from signalmint.delivery.fanout import FanOut
    from signalmint.store.outbox_claim import claim_loaded
    from signalmint.store.tables import deliveries

    with throwaway_schema(base) as url:
        _, db = fanout.build(url, 9, args.subscribers, 256, 500)  # the sink's port is never dialled
        db.write_sync(lambda conn: conn.exec_driver_sql("ALTER TABLE deliveries SET (autovacuum_enabled = off)"))
        out = FanOut({"webhook"})
        delivered, signals = 0, 0

        def one() -> float:
            """Commit one signal, claim its rows (timed), mark them sent."""
            nonlocal delivered, signals
            signals += 1
            fanout.commit(db, out, f"k{signals}")
            started = time.perf_counter()
            got = db.write_sync(
                claim_loaded, "bench", datetime.now(UTC), lease=timedelta(seconds=60), limit=500, autocommit=True
            )
            took = time.perf_counter() - started
            if got is None or len(got.claimed) != args.subscribers:
                raise SystemExit(f"a claim took {got and len(got.claimed)} rows, {args.subscribers} expected")
            ids = [d.id for d in got.claimed]

            def sent(conn: Any) -> None:
                conn.execute(deliveries.update().where(deliveries.c.id.in_(ids)).values(status="sent"))

            db.write_sync(sent)
            delivered += len(ids)
            return took

        def vacuum() -> None:  # (VACUUM runs outside a transaction)
            with db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM deliveries")

        print(
            f"PostgreSQL ({url.split('@')[-1].split('?')[0]}, a throwaway schema, autovacuum off on the outbox); "
            f"{args.subscribers} rows a claim; {args.samples} claims timed per checkpoint, and after VACUUM at the end",
            flush=True,
        )
        mine: list[float] = []
        checkpoints: list[int] = []
        while delivered < args.rows:
            target = min(args.rows, delivered + args.step)
            while delivered < target:
                one()
            checkpoints.append(delivered)
            mine.append(statistics.median(one() for _ in range(args.samples)) * 1000)
            print(
                f"  {checkpoints[-1]:>9,} rows delivered: claim {mine[-1]:.2f} ms (median of {args.samples})",
                flush=True,
            )
        vacuum()
        peer = statistics.median(one() for _ in range(args.samples)) * 1000
        db.close()
    growth, vacuumed = mine[-1] / mine[0], mine[-1] / peer
    print(
        f"claim {mine[0]:.2f} ms at {checkpoints[0]:,} rows delivered, {mine[-1]:.2f} ms at {checkpoints[-1]:,}: "
        f"{growth:.2f}x; after VACUUM {peer:.2f} ms: the last checkpoint is {vacuumed:.2f}x the vacuumed claim"
    )
    print_result({
        "rows": checkpoints[-1],
        "claim_ms_first": f"{mine[0]:.2f}",
        "claim_ms_last": f"{mine[-1]:.2f}",
        "vacuumed_ms": f"{peer:.2f}",
        "growth": f"{growth:.2f}",
        "ratio_vacuumed": f"{vacuumed:.2f}",
    })  # fmt: skip


if __name__ == "__main__":
    main()
