"""Many hosts on one PostgreSQL: 2 web, 2 engine and 3 worker processes, each in its own network
namespace, kill -9 and restarted at seeded moments, while signals fan out to 1,000 webhooks.

The hosts (:mod:`tests.scaleout.netns`; their processes and the SSE clients:
:mod:`tests.scaleout.procs`) sit on a bridge in the root namespace; PostgreSQL, which listens on
127.0.0.1 only, is reached through a small TCP proxy on the bridge address, as a
database host would be. Every process is a real ``signalmint run --role ...`` reading its own
config, in its host's namespace (forked from a parent that imported the CLI once,
:mod:`tests.processes`: a process of its own, killed and restarted as any other); a webhook
receiver (:mod:`tests.scaleout.receiver`) runs in a namespace of its own, reached from each worker
host through an egress relay on that host's 127.0.0.1 (the SSRF guard's
``delivery.allow_loopback_targets`` opens loopback, never private addresses such as 10.X.Y.N). The
load comes from the engines' sources (the synthetic market, a few symbols spiking often): each
signal fans out to 1,000 subscribers' webhook endpoints.

A seeded schedule (the same every run) kills one web, one engine, one worker and one more
process with SIGKILL at chosen moments after the first signal, and restarts each a second later.
Then the engines are stopped, the outbox drains, and:

* every (signal, endpoint) row of the outbox arrived at least once, and every arrival (duplicates
  included) carries that row's idempotency id as ``webhook-id``;
* an SSE client on each web replica (reconnecting with ``Last-Event-ID`` when its replica dies)
  saw every signal (every on-time one: a signal whose bar was already older than
  ``max_signal_age`` when it committed, such as a restarted engine's backfill, is stored as late
  and sent to nobody);
* nothing went to dead letters, and the engines' signal chains hold no duplicate.

Engines: until engine leases exist, the two engines run disjoint automations (``disjoint``).
The ``shared`` case runs both engines on every automation and kills one for good: the survivor
must take its automations over within the lease period. It runs once ``signalmint.store.leases``
exists (issue 16, item 1) and skips, saying so, before then.

Where namespaces cannot be made (not root, no ``ip``, no CAP_NET_ADMIN) the test skips, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from signalmint.accounts.credentials import new_api_key
from signalmint.config import PlanConfig, Settings
from signalmint.records import Automation
from signalmint.store import Database, sync_automations
from signalmint.store.auth import create_api_key
from signalmint.store.outbox import counts_by_status, idempotency_id
from signalmint.store.plans import sync_plans
from signalmint.store.tables import deliveries, subscribers, subscriptions
from signalmint.store.tables import endpoints as endpoints_table
from signalmint.store.tables import signals as signals_table

from .conftest import replay_migration
from .netns import Fabric, TcpProxy, run_relay, unavailable
from .procs import Proc, SseClient, stop_all, wait_http, wait_log
from .receiver import serve

pytestmark = [pytest.mark.pg, pytest.mark.slow]

PG_URL = os.environ.get("SIGNALMINT_TEST_PG")
SECRET = "multihost-secret-0123456789abcdef"
SUBSCRIBERS = 1000
SEED = 16
LOAD_SECONDS = 8.0  # signals flow this long after the first one; the kills (and restarts) fall inside it
WEB_PORT, RECEIVER_PORT = 8000, 9000
HOSTS = ["web1", "web2", "engine1", "engine2", "worker1", "worker2", "worker3", "receiver"]
AUTOMATIONS = ["alpha", "beta"]


def engine_leases() -> bool:
    """Engine leases have landed (issue 16, item 1): two engines may share every automation."""
    return importlib.util.find_spec("signalmint.store.leases") is not None


# --- the store ----------------------------------------------------------------------------------


@dataclass
class Store:
    url: str  # from this (the root) namespace
    remote_url: str  # from the hosts, through the proxy on the bridge
    db: Database
    admin_key: str
    endpoint_of_path: dict[str, int]


def _seed(db: Database) -> tuple[str, dict[str, int]]:
    now = datetime.now(UTC)
    settings = Settings(database=db.url, plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])])
    db.write_sync(
        sync_automations, [Automation(n, n.title(), "", "synthetic", "volume_spike", {}) for n in AUTOMATIONS], now
    )
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)
    key = new_api_key(SECRET.encode())

    def people(conn: Any) -> None:  # bulk inserts: the test is about delivery, not sign-ups
        conn.execute(subscribers.insert(), [
            {"email": f"s{i}@multihost.invalid", "created_at": now, "confirmed_at": now, "timezone": "UTC"}
            for i in range(SUBSCRIBERS)
        ])  # fmt: skip
        ids = list(conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars())
        conn.execute(subscriptions.insert(), [
            {"subscriber_id": sid, "plan_id": plan.id, "plan_version": plan.version, "state": "active",
             "started_at": now, "origin": "test", "updated_at": now}
            for sid in ids
        ])  # fmt: skip
        conn.execute(endpoints_table.insert(), [
            {"subscriber_id": sid, "channel": "webhook", "url": f"webhook+http://127.0.0.1:{RECEIVER_PORT}/hook/{i}",
             "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "status": "active", "status_reason": "",
             "created_at": now, "updated_at": now}
            for i, sid in enumerate(ids)
        ])  # fmt: skip
        create_api_key(conn, prefix=key.prefix, hash=key.hash, name="sse", now=now, subscriber_id=None, admin=True)

    db.write_sync(people)
    with db.engine.connect() as conn:
        rows = conn.execute(select(endpoints_table.c.id, endpoints_table.c.url))
        by_path = {r.url.split(f":{RECEIVER_PORT}", 1)[1]: r.id for r in rows}
    return key.text, by_path


# --- processes ----------------------------------------------------------------------------------


def _config(store: Store, automations: list[str], shared: bool) -> str:
    lines = [
        f'database: "{store.remote_url}"',
        f"secret: {SECRET}",
        "log_level: warning",
        f"web: {{host: 0.0.0.0, port: {WEB_PORT}}}",
        "delivery: {allow_loopback_targets: true, lease: 3s, poll: 50ms, batch: 500, concurrency: 128}",
        "plans:\n  - {id: premium, price: 2900, channels: [web, webhook]}",
    ]
    if shared:  # engine leases (issue 16, item 1): a killed engine's automations move within 2 s
        lines.append("engine: {lease: 2s, heartbeat: 0.5s}")
    lines.append("automations:")
    for name in automations:
        seed = 3 + AUTOMATIONS.index(name)
        lines += [
            f"  - name: {name}",
            f"    title: {name.title()}",
            "    source: {kind: synthetic, symbols: 2, interval: 0.5, spike_rate: 0.12, spike_gap: 2, "
            f"warmup: 25, seed: {seed}}}",
            "    detector: {kind: volume_spike, window: 20, cooldown: 1s}",
        ]
    return "\n".join(lines) + "\n"


# --- the fabric ----------------------------------------------------------------------------------


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")
    hosts = Fabric(HOSTS)
    hosts.up()
    try:
        yield hosts
    finally:
        hosts.down()


@pytest.fixture
def store(fabric: Fabric, request: pytest.FixtureRequest) -> Iterator[Store]:
    if PG_URL is None:
        pytest.skip("SIGNALMINT_TEST_PG is not set (the hosts share PostgreSQL)")
    schema = f"multihost_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = make_url(PG_URL)
    options = {"options": f"-csearch_path={schema}"}
    url = base.update_query_dict(options).render_as_string(hide_password=False)
    remote = base.set(host=fabric.gateway, port=base.port or 5432).update_query_dict(options)
    db = Database(url)
    try:
        replay_migration(db, request.getfixturevalue("_pg_migration_script"))
        key, by_path = _seed(db)
        with TcpProxy(fabric.gateway, base.port or 5432, base.port or 5432):
            yield Store(url, remote.render_as_string(hide_password=False), db, key, by_path)
    finally:
        db.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _receiver_records(fabric: Fabric) -> list[list[Any]]:
    url = f"http://{fabric.address['receiver']}:{RECEIVER_PORT}/deliveries"
    with urllib.request.urlopen(url, timeout=30) as r:
        records: list[list[Any]] = json.loads(r.read())
        return records


def _schedule(procs: dict[str, Proc], shared: bool) -> list[tuple[float, str, bool]]:
    """(seconds after the first signal, process, restart?): one web, one engine, one worker, one more.

    Seeded, so every run kills the same processes at the same moments. With shared automations
    (leases) the engine stays dead: the other must take its automations over.
    """
    rng = random.Random(SEED)
    names = sorted(procs)
    victims = [
        rng.choice([n for n in names if n.startswith("web")]),
        rng.choice([n for n in names if n.startswith("engine")]),
        rng.choice([n for n in names if n.startswith("worker")]),
    ]
    victims.append(rng.choice([n for n in names if not n.startswith("engine") and n not in victims]))
    moments = sorted(rng.uniform(1.0, LOAD_SECONDS - 4.0) for _ in victims)
    return [(at, name, not (shared and name.startswith("engine"))) for at, name in zip(moments, victims, strict=True)]


@pytest.mark.timeout(420)  # about 15 s on a quiet machine; several minutes on a loaded one
@pytest.mark.parametrize("engines", ["disjoint", "shared"])
def test_kill_9_across_hosts_loses_nothing(engines: str, fabric: Fabric, store: Store, tmp_path: Path) -> None:
    shared = engines == "shared"
    if shared and not engine_leases():
        pytest.skip("engine leases (signalmint.store.leases, issue 16 item 1) have not landed: engines run disjoint")
    receiver_at = fabric.address["receiver"]
    gate = tmp_path / "go"
    procs: dict[str, Proc] = {}
    for host in HOSTS:
        if host == "receiver":
            continue
        role = host.rstrip("0123456789")
        # until leases: disjoint automations (alpha on engine1, beta on engine2); with leases, shared
        automations = [AUTOMATIONS[int(host[-1]) - 1]] if role == "engine" and not shared else AUTOMATIONS
        config = tmp_path / f"{host}.yaml"
        config.write_text(_config(store, automations, shared))
        args = ["run", "-c", str(config), "--role", role]
        # the engines start with the others; their automations read their sources once the SSE clients are
        # connected (the fault hooks' start gate, signalmint/engine/faults.py)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SIGNALMINT_FAULT_START_GATE": str(gate)}
        log = tmp_path / f"{host}.log"
        procs[host] = Proc(host, args, log, fabric.namespace(host), env=env if role == "engine" else None)
    receiver = Proc(
        "receiver", ["0.0.0.0", RECEIVER_PORT], tmp_path / "receiver.log", fabric.namespace("receiver"), serve
    )
    relays = [  # each worker host's egress relay: 127.0.0.1:9000 there -> the receiver host
        Proc(
            f"relay-{w}",
            ["127.0.0.1", RECEIVER_PORT, receiver_at, RECEIVER_PORT],
            tmp_path / f"relay-{w}.log",
            fabric.namespace(w),
            run_relay,
        )
        for w in ("worker1", "worker2", "worker3")
    ]
    everyone = [receiver, *relays, *procs.values()]
    clients = [
        SseClient(f"http://{fabric.address[w]}:{WEB_PORT}/api/v1/stream", store.admin_key) for w in ("web1", "web2")
    ]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    try:
        began = time.monotonic()
        for helper in (receiver, *relays):
            helper.start()
        for name in ("web1", "web2", "worker1", "worker2", "worker3", "engine1", "engine2"):
            procs[name].start()
        wait_http(f"http://{receiver_at}:{RECEIVER_PORT}/count", receiver)
        for relay in relays:
            wait_log(relay, "relaying")
        for web in ("web1", "web2"):
            wait_http(f"http://{fabric.address[web]}:{WEB_PORT}/healthz", procs[web])
        for thread in threads:
            thread.start()
        for client in clients:
            assert client.connected.wait(30), f"no SSE connection to {client.url}"
        gate.touch()  # the data flows
        ready = time.monotonic()
        first = _first_signal(store, procs, within=120)
        # the kills, at seeded moments after the first signal (a web replica's SSE client has a position by then)
        plan = _schedule(procs, shared)
        events = sorted(
            [(at, "kill", name) for at, name, _ in plan]
            + [(at + 1.0, "start", name) for at, name, again in plan if again]
        )  # each restarted a second after its kill, from this thread (children die with it: PR_SET_PDEATHSIG)
        dead_engine: datetime | None = None
        for at, action, name in events:
            time.sleep(max(0.0, first + at - time.monotonic()))
            if action == "start":
                procs[name].start()
                continue
            procs[name].kill9()
            if name.startswith("engine") and shared:
                dead_engine = datetime.now(UTC)  # it is dead (kill9 waited): it commits nothing from here
        time.sleep(max(0.0, first + LOAD_SECONDS - time.monotonic()))
        if dead_engine is not None:
            _assert_taken_over(store, dead_engine)
        stop_all([procs["engine1"], procs["engine2"]])  # a clean stop: the signal log is final from here
        stopped = time.monotonic()
        expected = _drain(store, receiver, seconds=90)
        records = _receiver_until(fabric, expected, seconds=30)
        with store.db.engine.connect() as conn:  # the on-time signals; a late one is old news, sent to nobody
            signal_ids = set(conn.execute(select(signals_table.c.id).where(~signals_table.c.late)).scalars())
        for web in ("web1", "web2"):  # a restarted replica is serving again (a loaded machine starts it slowly)
            wait_http(f"http://{fabric.address[web]}:{WEB_PORT}/healthz", procs[web])
        for client in clients:
            deadline = time.monotonic() + 15
            while not signal_ids <= client.seen and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        for client in clients:
            client.stop.set()
        stop_all(everyone)
    print(
        f"\nhosts up and streaming {ready - began:.1f} s, first signal +{first - ready:.1f} s, load and kills "
        f"+{stopped - first:.1f} s, drained and checked +{time.monotonic() - stopped:.1f} s; kills: "
        + ", ".join(f"{name} at +{at:.1f} s" for at, name, _ in plan)
    )
    _check_deliveries(store, expected, records)
    for client, web in zip(clients, ("web1", "web2"), strict=True):
        missing = signal_ids - client.seen
        assert not missing, (
            f"{client.url} never streamed signals {sorted(missing)[:10]} ({client.connects} connects; "
            f"last troubles {client.trouble}); {_order(store, missing, client.seen)}; {web}'s log:\n{procs[web].tail()}"
        )
    assert sum(p.kills for p in procs.values()) == len(plan)
    with store.db.engine.connect() as conn:
        chains = conn.execute(
            select(signals_table.c.automation, signals_table.c.key, signals_table.c.time, func.count())
            .group_by(signals_table.c.automation, signals_table.c.key, signals_table.c.time)
            .having(func.count() > 1)
        ).all()
    assert not chains, f"a signal was committed twice: {chains[:5]}"


def _order(store: Store, missing: set[int], seen: set[int]) -> str:
    """The missing signals' release stamps (``created_at``, taken before the commit) against those the stream
    sent: a stream whose cursor (release stamp, id) passed a signal before its commit became visible, later
    than ``SETTLE`` after its stamp (a slow fan-out transaction on a loaded machine), never sends it."""
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(signals_table.c.id, signals_table.c.automation, signals_table.c.created_at)).all()
    out = []
    for r in sorted(rows):
        if r.id in missing:
            later = sum(1 for o in rows if o.id in seen and o.created_at > r.created_at)
            out.append(f"#{r.id} {r.automation} stamped {r.created_at:%H:%M:%S.%f} ({later} sent ones stamped later)")
    return "; ".join(out[:5])


def _first_signal(store: Store, procs: dict[str, Proc], within: float) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with store.db.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(signals_table)).scalar_one():
                return time.monotonic()
        for name in ("engine1", "engine2"):
            popen = procs[name].popen
            assert popen is not None and popen.poll() is None, f"{name} exited:\n{procs[name].tail()}"
        time.sleep(0.1)
    raise AssertionError(f"no signal within {within:g} s:\n{procs['engine1'].tail()}")


def _assert_taken_over(store: Store, since: datetime) -> None:
    """Shared automations: each automation commits again after the engine was killed (at ``since``; lease 2 s).

    A signal's ``created_at`` is stamped before its commit, and the dead engine commits nothing after
    the kill: the dead engine's automations committed again only once the survivor took them over."""
    deadline = time.monotonic() + 15
    later: set[str] = set()
    while time.monotonic() < deadline and later != set(AUTOMATIONS):
        with store.db.engine.connect() as conn:
            later = set(
                conn.execute(
                    select(signals_table.c.automation).distinct().where(signals_table.c.created_at > since)
                ).scalars()
            )
        time.sleep(0.3)
    assert later == set(AUTOMATIONS), f"after the engine died ({since}) only {later} committed again"


def _drain(store: Store, receiver: Proc, seconds: float) -> set[tuple[int, int]]:
    """Wait until every outbox row is sent; the (signal, endpoint) pairs that must have arrived."""
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = store.db.read_sync(counts_by_status)
        if counts and set(counts) <= {"sent", "dead", "skipped"}:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the outbox did not drain in {seconds:g} s: {counts}\n{receiver.tail()}")
    with store.db.engine.connect() as conn:
        errors = conn.execute(select(deliveries.c.last_error).distinct().where(deliveries.c.status != "sent").limit(3))
        assert counts.get("dead", 0) == 0 and counts.get("skipped", 0) == 0, (counts, errors.scalars().all())
        pairs = {
            (r.signal_id, r.endpoint_id) for r in conn.execute(select(deliveries.c.signal_id, deliveries.c.endpoint_id))
        }
        # a late signal (its bar older than max_signal_age, e.g. a backfill after a restart) gets no outbox rows
        on_time = conn.execute(
            select(func.count()).select_from(signals_table).where(~signals_table.c.late)
        ).scalar_one()
    assert on_time and len(pairs) == on_time * SUBSCRIBERS, (len(pairs), on_time)
    return pairs


def _receiver_until(fabric: Fabric, expected: set[tuple[int, int]], seconds: float) -> list[list[Any]]:
    deadline = time.monotonic() + seconds
    while True:
        records = _receiver_records(fabric)
        if len(records) >= len(expected) or time.monotonic() > deadline:
            return records
        time.sleep(0.3)


def _check_deliveries(store: Store, expected: set[tuple[int, int]], records: list[list[Any]]) -> None:
    ids_by_pair: dict[tuple[int, int], set[str]] = defaultdict(set)
    copies: Counter[tuple[int, int]] = Counter()
    for path, webhook_id, signal_id in records:
        pair = (signal_id, store.endpoint_of_path[path])
        ids_by_pair[pair].add(webhook_id)
        copies[pair] += 1
    missing = expected - set(ids_by_pair)
    assert not missing, f"{len(missing)} of {len(expected)} deliveries never arrived, e.g. {sorted(missing)[:5]}"
    wrong = {p: ids for p, ids in ids_by_pair.items() if ids != {idempotency_id(*p)}}
    assert not wrong, f"deliveries whose copies carry another id: {list(wrong.items())[:5]}"
    unexpected = set(ids_by_pair) - expected
    assert not unexpected, f"deliveries nobody queued: {sorted(unexpected)[:5]}"
    duplicates = sum(n - 1 for n in copies.values())
    print(f"{len(expected)} deliveries, {len(records)} arrivals, {duplicates} duplicates (same id each)")
