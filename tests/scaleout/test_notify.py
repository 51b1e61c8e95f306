"""Web replicas on PostgreSQL stay live (issue 16, item 2): real processes, one database.

Two ``signalmint run --role web`` processes and one ``--role engine`` process share a PostgreSQL
schema. Streams poll only every 30 s here (``web.stream_poll_seconds``), so a stream that sees a
signal within a few seconds of its commit heard of it through LISTEN/NOTIFY, not by polling.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from signalmint.store import Database
from signalmint.store.tables import signals as signals_table

from .. import processes
from ..conftest import free_port
from .conftest import replay_migration

PG_URL = os.environ.get("SIGNALMINT_TEST_PG")
pytestmark = [
    pytest.mark.pg,
    pytest.mark.skipif(PG_URL is None, reason="SIGNALMINT_TEST_PG is not set"),
    pytest.mark.timeout(180),
]

POLL = 30.0  # a stream's poll period in these tests: far above every bound asserted
PROMPT = 4.0  # seconds from commit to a stream: SETTLE (1 s) plus slack for a loaded machine

AUTOMATION = """
automations:
  - name: syn
    title: Synthetic
    source: {kind: synthetic, symbols: 100, seed: 3, interval: 0.2, spike_rate: 0.016, spike_gap: 30, warmup: 12}
    detector: {kind: volume_spike, window: 10, ratio: 3, z: 4, cooldown: 1m}
"""


@pytest.fixture
def schema(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(URL, schema name) of a fresh, migrated PostgreSQL schema; dropped afterwards."""
    assert PG_URL is not None
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{name}%20-csynchronous_commit%3Doff"  # as conftest's
    db = Database(url)
    # once, before the processes start (each would find it at head): Alembic's statements of this session
    replay_migration(db, request.getfixturevalue("_pg_migration_script"))
    db.close()
    try:
        yield url, name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


class Cluster:
    """Processes of the real CLI on one database; every one is stopped at the end."""

    def __init__(self, tmp: Path, url: str, extra: str = "", web: str = "") -> None:
        self.tmp, self.url, self.extra, self.web = tmp, url, extra, web
        self.procs: list[tuple[str, processes.Started, Path]] = []
        self.http = httpx.Client()  # one client: each new one loads the CA bundle again (~40 ms of CPU)

    def start(self, role: str) -> str:
        """Start a process of ``role``; for ``web``, its base URL once it answers."""
        port = free_port()
        name = f"{role}{len(self.procs)}"
        config = self.tmp / f"{name}.yaml"
        web = f"port: {port}, stream_poll_seconds: {POLL}" + (f", {self.web}" if self.web else "")
        config.write_text(f'database: "{self.url}"\nweb: {{{web}}}\n{self.extra}')
        log = self.tmp / f"{name}.log"
        proc = processes.start(["run", "-c", str(config), "--role", role], output=log)
        self.procs.append((name, proc, log))
        return f"http://127.0.0.1:{port}" if role == "web" else ""

    def wait_web(self, base: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return
            for name, proc, log in self.procs:
                assert proc.poll() is None, f"{name} exited:\n{log.read_text()}"
            time.sleep(0.1)
        raise AssertionError(f"{base} never answered")

    def stop(self, role: str) -> None:
        for name, proc, _ in self.procs:
            if name.startswith(role) and proc.poll() is None:
                proc.send_signal(signals.SIGTERM)
        for name, proc, _ in self.procs:
            if name.startswith(role):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def close(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.http.close()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{log.read_text()[-3000:]}" for name, _, log in self.procs)


@pytest.fixture
def cluster(tmp_path: Path, schema: tuple[str, str]) -> Iterator[Cluster]:
    running = Cluster(tmp_path, schema[0], AUTOMATION)
    try:
        yield running
    finally:
        running.close()


@dataclass
class Stream:
    """An SSE client on its own thread: signal id -> when it arrived (epoch seconds)."""

    base: str
    seen: dict[int, float] = field(default_factory=dict)
    opened: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.opened.wait(10), f"no stream from {self.base}: {self.error}"
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(5, read=60)) as client,
                client.stream("GET", f"{self.base}/api/v1/stream") as response,
            ):
                assert response.status_code == 200, response.read()
                self.opened.set()
                event, ident = "", ""
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("id:"):
                        ident = line.split(":", 1)[1].strip()
                    elif line == "":
                        if event == "signal" and ident:
                            self.seen.setdefault(int(ident), time.time())
                        event, ident = "", ""
        except BaseException as exc:
            if not self._stop.is_set():
                self.error.append(exc)
                self.opened.set()

    def stop(self) -> None:
        self._stop.set()


def committed(url: str) -> dict[int, float]:
    """Every signal in the store: id -> its commit time (created_at, epoch seconds)."""
    db = Database(url)
    try:
        rows = db.read_sync(lambda conn: conn.execute(select(signals_table.c.id, signals_table.c.created_at)).all())
    finally:
        db.close()
    return {int(i): at.replace(tzinfo=UTC).timestamp() if at.tzinfo is None else at.timestamp() for i, at in rows}


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def listeners(name: str) -> list[int]:
    """Backend pids of the web processes' LISTEN connections on schema ``name``."""
    assert PG_URL is not None
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            query = text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
            return [int(r[0]) for r in conn.execute(query, {"name": f"signalmint listener {name}"})]
    finally:
        engine.dispose()


def terminate(pids: list[int]) -> None:
    assert PG_URL is not None
    engine = create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        engine.dispose()


def start_replicas(cluster: Cluster, schema: str) -> list[Stream]:
    """Two web replicas and an engine, started together; a stream open on each replica."""
    bases = [cluster.start("web"), cluster.start("web")]
    cluster.start("engine")
    for base in bases:
        cluster.wait_web(base)
    wait_for(lambda: len(listeners(schema)) == 2, 10, "both replicas listen")
    return [Stream(base).start() for base in bases]


def after(url: str, since: float) -> dict[int, float]:
    """The signals committed after ``since`` (a stream opened before then owes every one of them)."""
    return {i: at for i, at in committed(url).items() if at > since}


def check_streams(streams: list[Stream], owed: dict[int, float], url: str) -> list[float]:
    """Every stream gets every owed signal, and nothing that is not in the store; the lags."""
    try:
        wait_for(lambda: all(set(s.seen) >= set(owed) for s in streams), PROMPT + 1, "every stream sees every signal")
    finally:
        for stream in streams:
            stream.stop()
    stored = committed(url)
    lags = []
    for stream in streams:
        assert not stream.error, stream.error
        assert set(stream.seen) <= set(stored)
        lag = [stream.seen[i] - at for i, at in owed.items()]
        print(f"{stream.base}: {len(lag)} signals, lag max {max(lag):.2f} s")
        lags += lag
    return lags


def test_every_replica_streams_every_signal_promptly(cluster: Cluster, schema: tuple[str, str]) -> None:
    streams = start_replicas(cluster, schema[1])
    opened = time.time()
    wait_for(lambda: len(after(schema[0], opened)) >= 20, 60, f"the engine commits signals\n{cluster.logs()}")
    lags = check_streams(streams, after(schema[0], opened), schema[0])
    assert max(lags) < PROMPT, f"the slowest signal took {max(lags):.2f} s (streams poll every {POLL} s)"


def test_streams_recover_when_the_listen_connection_is_killed(cluster: Cluster, schema: tuple[str, str]) -> None:
    streams = start_replicas(cluster, schema[1])
    opened = time.time()
    first = listeners(schema[1])
    wait_for(lambda: len(after(schema[0], opened)) >= 5, 60, f"the engine commits signals\n{cluster.logs()}")
    terminate(first)  # as a PostgreSQL restart or a lost network would
    wait_for(
        lambda: len(set(listeners(schema[1])) - set(first)) == 2, 10, f"both replicas listen again\n{cluster.logs()}"
    )
    back = time.time()
    wait_for(lambda: len(after(schema[0], back)) >= 10, 30, "the engine goes on committing")
    owed = after(schema[0], opened)  # before, during and after the cut: nothing is missed
    check_streams(streams, owed, schema[0])
    lags = [stream.seen[i] - at for stream in streams for i, at in owed.items() if at > back]
    assert max(lags) < PROMPT, f"after the reconnect the slowest signal took {max(lags):.2f} s"
    assert cluster.logs().count("LISTEN connection lost") == 2


def test_signals_committed_at_once_wake_no_stream_before_they_settle() -> None:
    """The hub's delayed wake-ups are shared: a burst of notifications costs one wake-up per 100 ms."""
    import asyncio

    from signalmint.engine.hub import SignalHub

    async def run() -> tuple[int, int]:
        hub = SignalHub()
        for i in range(1, 51):
            hub.publish_later(i, 0.2)
        before = hub.generation
        await asyncio.sleep(0.45)
        return before, hub.generation

    before, after = asyncio.run(run())
    assert before == 0 and 1 <= after <= 4


PLANS = """
plans:
  - {id: pro, name: Pro, price: 2900, channels: [web, api], rate_per_second: 0.001, burst: 3}
  - {id: quota, name: Quota, price: 900, channels: [web, api], api_quota: 3, rate_per_second: 100, burst: 100}
"""


def subscriber_key(url: str, email: str, plan_id: str) -> str:
    """An API key of a new subscriber on ``plan_id`` (the plans the replicas synced)."""
    from signalmint.accounts.credentials import new_api_key
    from signalmint.accounts.service import server_pepper
    from signalmint.config import Settings
    from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
    from signalmint.store.auth import create_api_key
    from signalmint.store.plans import load_plans

    db = Database(url)
    try:
        pepper = server_pepper(Settings(database=url), db)
        issued = new_api_key(pepper)
        now = datetime.now(UTC)

        def write(conn: Any) -> None:
            plan = next(p for p in load_plans(conn, current_only=True).values() if p.id == plan_id)
            person = ensure_subscriber(conn, email, now)
            confirm_subscriber(conn, person.id, now)
            start_subscription(conn, person.id, plan, now, origin="test", state="active")
            create_api_key(
                conn, prefix=issued.prefix, hash=issued.hash, name="k", now=now, subscriber_id=person.id, admin=False
            )

        db.write_sync(write)
    finally:
        db.close()
    return issued.text


def test_limits_spent_on_one_replica_hold_on_the_other(tmp_path: Path, schema: tuple[str, str]) -> None:
    url = schema[0]
    db = Database(url)
    from signalmint.accounts.service import server_pepper
    from signalmint.billing.usage import month_of
    from signalmint.config import Settings
    from signalmint.store.usage import get_usage

    server_pepper(Settings(database=url), db)  # made once here, not raced by two starting replicas
    cluster = Cluster(tmp_path, url, AUTOMATION + PLANS, web="public_rate_per_second: 0.001, public_burst: 4")
    try:
        a, b = cluster.start("web"), cluster.start("web")
        cluster.wait_web(a)
        cluster.wait_web(b)
        signals_path = "/api/v1/signals?limit=1"
        http = cluster.http

        # The public allowance per address: 4 on A, then B refuses too.
        assert [http.get(a + signals_path).status_code for _ in range(4)] == [200] * 4
        refused = http.get(b + signals_path)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 1

        # A key's token bucket (burst 3): spent on A, empty on B.
        pro = {"Authorization": f"Bearer {subscriber_key(url, 'pro@example.com', 'pro')}"}
        assert [http.get(a + signals_path, headers=pro).status_code for _ in range(3)] == [200] * 3
        refused = http.get(b + signals_path, headers=pro)
        assert refused.status_code == 429, refused.text
        assert refused.headers["RateLimit-Remaining"] == "0"

        # A monthly quota of 3: B counts one (and reads the stored count), A spends the rest,
        # and once A's usage is stored B refuses, although B itself made only one call.
        quota = {"Authorization": f"Bearer {subscriber_key(url, 'quota@example.com', 'quota')}"}
        assert http.get(b + signals_path, headers=quota).status_code == 200
        assert [http.get(a + signals_path, headers=quota).status_code for _ in range(2)] == [200] * 2
        subscriber = db.read_sync(
            lambda conn: conn.execute(text("SELECT id FROM subscribers WHERE email = 'quota@example.com'")).scalar_one()
        )
        month = month_of(datetime.now(UTC))
        wait_for(lambda: db.read_sync(get_usage, subscriber, month)[0] == 3, 10, "both replicas store their usage")
        # B's next flush (every second) drops its stored count and it reads 3: B refuses from then
        # on. Until then it may let a call through (documented: "a call or two"); a B that kept its
        # first reading (1 call) would let every call through.
        answers = []
        for _ in range(8):
            answers.append(http.get(b + signals_path, headers=quota))
            if answers[-1].status_code == 429:
                break
            time.sleep(0.5)
        assert answers[-1].status_code == 429 and "quota" in answers[-1].json()["detail"], answers[-1].text
        assert len(answers) <= 4, [a.status_code for a in answers]
    finally:
        cluster.close()
        db.close()
