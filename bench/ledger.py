"""Concurrent credit debits with the never-negative guarantee on, SQLite and PostgreSQL, same run.

8 subscribers hold 400 micro-units each; 4,000 debits of 1 (500 per subscriber, round robin)
race for them, so exactly 400 per subscriber succeed and 100 are refused. Each debit is one
transaction that writes the wallet and its ledger entry. After every run the bench checks
that each balance is exactly 0 and equals the sum of its ledger.

* SQLite, as the app writes: 32 asyncio tasks awaiting ``Database.write`` (one writer thread).
* PostgreSQL, as several app processes would: 16 threads, each its own pooled connection.

The peer, measured in the same run on the same database, is the usual correct alternative: a
read-then-write debit under a lock (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
PostgreSQL), then the same ledger entry. ``debit()`` does the check and the write in one
conditional ``UPDATE ... WHERE balance >= n RETURNING balance``. Medians of ``--runs``.

    uv run python bench/ledger.py [--runs 3] [--pg URL]

PostgreSQL: ``--pg``, else SIGNALMINT_BENCH_PG or SIGNALMINT_TEST_PG, else the local server.
Ratios are medians of the per-run ratios (``debit()`` / the locked read-then-write of the same
run), with their range. Last line: RESULT debits_per_s_sqlite=... locked_per_s_sqlite=...
ratio_sqlite=... ratio_sqlite_min=... ratio_sqlite_max=... (the same for _pg) load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from _common import add_common, describe_ratio, print_result, ratio_fields, ratios, span
from sqlalchemy import Connection, bindparam, create_engine, select, text

from signalmint.billing.credits import balance, credit, debit
from signalmint.store import Database
from signalmint.store.accounts import ensure_subscriber
from signalmint.store.ledger import insert_entry, ledger_sums
from signalmint.store.migrate import migrate
from signalmint.store.tables import wallets

SUBSCRIBERS = 8
BALANCE = 400
PER_SUBSCRIBER = 500
TASKS_SQLITE = 32
THREADS_PG = 16
NOW = datetime.now(UTC)
_emails = itertools.count()

Debit = Callable[[Connection, int, int, datetime], bool]


def ours(conn: Connection, sid: int, n: int, now: datetime) -> bool:
    return debit(conn, sid, n, "api_call", None, now)


_READ = select(wallets.c.balance).where(wallets.c.subscriber_id == bindparam("sid"))
_READ_LOCKED = _READ.with_for_update()
_WRITE = (
    wallets.update()
    .where(wallets.c.subscriber_id == bindparam("sid"))
    .values(balance=bindparam("balance"), updated_at=bindparam("now"))
)


def locked_read_then_write(conn: Connection, sid: int, n: int, now: datetime) -> bool:
    """The peer: lock the row (or the database), read, decide in Python, write (statements prebuilt too)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        held = conn.execute(_READ, {"sid": sid}).scalar()
    else:
        held = conn.execute(_READ_LOCKED, {"sid": sid}).scalar()
    if held is None or held < n:
        return False
    conn.execute(_WRITE, {"sid": sid, "balance": held - n, "now": now})
    insert_entry(conn, sid, -n, held - n, "api_call", None, now)
    return True


def fund(db: Database) -> list[int]:
    def write(conn: Connection) -> list[int]:
        ids = [ensure_subscriber(conn, f"b{next(_emails)}@bench.invalid", NOW).id for _ in range(SUBSCRIBERS)]
        for sid in ids:
            credit(conn, sid, BALANCE, "grant", None, NOW)
        return ids

    return db.write_sync(write)


def plan(ids: list[int]) -> list[int]:
    return [sid for _ in range(PER_SUBSCRIBER) for sid in ids]


def check(db: Database, ids: list[int], results: list[bool], attempts: list[int]) -> None:
    won: dict[int, int] = dict.fromkeys(ids, 0)
    for sid, ok in zip(attempts, results, strict=True):
        won[sid] += ok
    sums = db.read_sync(ledger_sums, ids)
    for sid in ids:
        left = db.read_sync(balance, sid)
        if won[sid] != BALANCE or left != 0 or sums[sid] != 0:
            raise SystemExit(f"subscriber {sid}: {won[sid]} debits succeeded, balance {left}, ledger {sums[sid]}")


def run_sqlite(db: Database, fn: Debit) -> float:
    ids = fund(db)
    attempts = plan(ids)
    queue = iter(enumerate(attempts))
    results: list[bool] = [False] * len(attempts)

    async def worker() -> None:
        for i, sid in queue:
            results[i] = await db.write(fn, sid, 1, NOW)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(TASKS_SQLITE)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    check(db, ids, results, attempts)
    return len(attempts) / elapsed


def run_pg(db: Database, url: str, fn: Debit) -> float:
    ids = fund(db)
    attempts = plan(ids)
    results: list[bool] = [False] * len(attempts)
    lock = threading.Lock()
    queue = iter(enumerate(attempts))
    engine = create_engine(url, pool_size=THREADS_PG, max_overflow=0)
    barrier = threading.Barrier(THREADS_PG + 1)

    def worker() -> None:
        with engine.connect() as conn:
            barrier.wait()
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                with conn.begin():
                    results[item[0]] = fn(conn, item[1], 1, NOW)

    try:
        with ThreadPoolExecutor(THREADS_PG) as pool:
            futures = [pool.submit(worker) for _ in range(THREADS_PG)]
            barrier.wait()
            started = time.perf_counter()
            for f in futures:
                f.result()
            elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    check(db, ids, results, attempts)
    return len(attempts) / elapsed


def paired(runs: int, one: Callable[[Debit], float]) -> tuple[list[float], list[float]]:
    mine: list[float] = []
    peer: list[float] = []
    for _ in range(runs):  # alternated, so drift hits both alike
        mine.append(one(ours))
        peer.append(one(locked_read_then_write))
    return mine, peer


def report(name: str, mine: list[float], peer: list[float], how: str, tag: str) -> dict[str, object]:
    stats = ratios(mine, peer)
    print(
        f"{name} ({how}): debit() {span(mine)[0]:,.0f} debits/s (runs {min(mine):,.0f}-{max(mine):,.0f}), "
        f"locked read-then-write {span(peer)[0]:,.0f} (runs {min(peer):,.0f}-{max(peer):,.0f}), "
        f"ratio {describe_ratio(stats)}"
    )
    return {
        f"debits_per_s_{tag}": f"{span(mine)[0]:.0f}",
        f"locked_per_s_{tag}": f"{span(peer)[0]:.0f}",
        **ratio_fields(f"ratio_{tag}", stats, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pg", default=None, help="PostgreSQL URL (default: SIGNALMINT_BENCH_PG, SIGNALMINT_TEST_PG, the local server)"
    )
    add_common(parser, runs=3, ports=False)
    args = parser.parse_args()
    pg_base = (
        args.pg
        or os.environ.get("SIGNALMINT_BENCH_PG")
        or os.environ.get("SIGNALMINT_TEST_PG")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    total = SUBSCRIBERS * PER_SUBSCRIBER
    print(f"{SUBSCRIBERS} subscribers x {BALANCE} micros, {total} debits of 1 per run, {args.runs} runs, medians")

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/ledger.db")
        migrate(db)
        try:
            sqlite_mine, sqlite_peer = paired(args.runs, lambda fn: run_sqlite(db, fn))
        finally:
            db.close()
    fields = report("SQLite", sqlite_mine, sqlite_peer, f"{TASKS_SQLITE} tasks over Database.write", "sqlite")

    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    admin: Any = create_engine(pg_base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no server: say so, the SQLite figures stand
        print(f"PostgreSQL: not measured ({type(exc).__name__}: {exc})".splitlines()[0])
    else:
        url = f"{pg_base}{'&' if '?' in pg_base else '?'}options=-csearch_path%3D{schema}"
        db = Database(url)
        try:
            migrate(db)
            pg_mine, pg_peer = paired(args.runs, lambda fn: run_pg(db, url, fn))
            fields.update(report("PostgreSQL", pg_mine, pg_peer, f"{THREADS_PG} threads, a connection each", "pg"))
        finally:
            db.close()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
    print("every run: each subscriber ended at exactly 0 with 400 debits taken and 100 refused; ledger sums match")
    fields.setdefault("debits_per_s_pg", "nan")
    fields.update(runs=args.runs, debits_per_run=total)
    print_result(fields)


if __name__ == "__main__":
    main()
