"""Two real engine processes (`signalmint run --role engine`, forked from a warm parent:
:mod:`tests.processes`) share four replayed automations;
one is killed with -9 at a chosen commit (the fault-injection hooks of signalmint/engine/faults.py) or
paused with SIGSTOP, and the other takes its automations over within a lease period. The
signal log of every automation must then equal, signal for signal and seq for seq, the log of
one engine run alone over the same data, and its hash chain must verify."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from signalmint.registry import Registry
from signalmint.store import Database
from signalmint.store.leases import list_leases
from signalmint.store.signals import count_signals, verify_chain

from .. import processes
from .conftest import NAMES, Log, config_yaml, reference_logs, same_signals, signal_logs, write_data

LEASE, BEAT = 1.5, 0.3
pytestmark = pytest.mark.slow


def holder_pids(db: Database) -> dict[str, int | None]:
    """automation -> pid of the engine holding its live lease (None: free)."""
    return {x.automation: int(x.holder.split(":")[-2]) if x.holder else None for x in db.read_sync(list_leases)}


class Engines:
    """Engine subprocesses on one config, their output kept for the failure message."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.config, self.folder = config, folder
        self.procs: list[processes.Started] = []
        self.gate = folder / "go"

    def go(self) -> None:
        """Let the data flow (the engines have lined up: automations wait for this file)."""
        self.gate.touch()

    def start(self, **faults: int) -> processes.Started:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SIGNALMINT_FAULT_START_GATE": str(self.gate)}
        env.update({f"SIGNALMINT_FAULT_{k.upper()}": str(v) for k, v in faults.items()})
        args = ["run", "-c", str(self.config), "--role", "engine"]
        proc = processes.start(args, output=self.folder / f"engine{len(self.procs)}.log", env=env)
        self.procs.append(proc)
        return proc

    def output(self, tail: int = 4000) -> str:
        return "\n".join(p.read_text()[-tail:] for p in sorted(self.folder.glob("engine*.log")))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> tuple[dict[str, Path], dict[str, Log]]:
    """The four automations' data, and the log one engine alone makes of it (once per module)."""
    folder = tmp_path_factory.mktemp("replay")
    data = write_data(folder, bars=120, quiet=50)
    expected = reference_logs(folder, data, registry)
    assert all(len(expected[n]) > 20 for n in NAMES)
    return data, expected


@pytest.fixture
def setup(
    db: Database, replay: tuple[dict[str, Path], dict[str, Log]], tmp_path: Path
) -> Iterator[tuple[Engines, dict[str, Log]]]:
    data, expected = replay
    config = tmp_path / "engines.yaml"
    config.write_text(config_yaml(db.url, data, pace=0.015, lease=LEASE, beat=BEAT))
    engines = Engines(config, tmp_path)
    try:
        yield engines, expected
    finally:
        engines.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float, engines: Engines) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{engines.output()}")
        time.sleep(0.02)
    return time.monotonic()


def split_evenly(db: Database, pids: set[int]) -> bool:
    return Counter(holder_pids(db).values()) == Counter({p: 2 for p in pids})


def finish(db: Database, engines: Engines, expected: dict[str, Log]) -> None:
    """Wait until every log is as long as the reference, stop the engines, and compare."""
    done = {n: len(expected[n]) for n in NAMES}
    wait_for("every automation to finish", lambda: all(db.read_sync(count_signals, n) >= done[n] for n in NAMES),
             40, engines)  # fmt: skip
    for proc in engines.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, engines.output()
    same_signals(signal_logs(db), expected)
    for name in NAMES:
        assert db.read_sync(verify_chain, name).ok, name


KILLS = {"right after committing signal 12": {"kill_after_signal": 12},
         "right before committing signal 12": {"kill_before_signal": 12}}  # fmt: skip


@pytest.mark.parametrize("fault", KILLS.values(), ids=KILLS.keys())
def test_kill_9_one_engine_the_other_takes_over_losing_and_repeating_nothing(
    fault: dict[str, int], db: Database, setup: tuple[Engines, dict[str, Log]]
) -> None:
    if fault.get("kill_before_signal") and db.engine.dialect.name == "sqlite":
        pytest.skip("one kill point is enough on SQLite (the fence is the same SQL)")
    engines, expected = setup
    victim = engines.start(**fault)
    survivor = engines.start()
    pids = {victim.pid, survivor.pid}
    wait_for("the engines to split the automations 2 and 2", lambda: split_evenly(db, pids), 90, engines)
    engines.go()
    assert victim.wait(timeout=60) == -signal.SIGKILL, engines.output()
    died = time.monotonic()
    took = wait_for("the survivor to take everything over",
                    lambda: set(holder_pids(db).values()) == {survivor.pid}, 10, engines)  # fmt: skip
    print(f"take-over {took - died:.2f}s after the kill (lease {LEASE}s, heartbeat {BEAT}s)")
    assert took - died <= LEASE + BEAT + 1.0, took - died  # a lease, a heartbeat round (and 1 s of a busy machine)
    finish(db, engines, expected)
    assert engines.output(tail=10**7).count("TAKE-OVER from") == 2


def test_a_paused_engine_cannot_commit_after_its_lease_was_taken(
    db: Database, setup: tuple[Engines, dict[str, Log]]
) -> None:
    """SIGSTOP right before a commit (a zombie: a GC pause, a frozen VM); the other engine takes
    over and finishes; SIGCONT: the zombie's commit is refused by the fence, then it rejoins."""
    if db.engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only: the kill test covers SQLite's fence (the same SQL)")
    engines, expected = setup
    zombie = engines.start(pause_before_signal=12)
    other = engines.start()
    wait_for("the engines to split the automations", lambda: split_evenly(db, {zombie.pid, other.pid}), 90, engines)
    engines.go()
    wait_for("the zombie to stop", lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] == "T",
             30, engines)  # fmt: skip
    wait_for("the take-over", lambda: set(holder_pids(db).values()) == {other.pid}, 10, engines)
    zombie.send_signal(signal.SIGCONT)
    wait_for("the zombie's commit to be refused", lambda: "taken over; nothing committed" in engines.output(tail=10**7),
             10, engines)  # fmt: skip
    wait_for("the zombie to rejoin", lambda: split_evenly(db, {zombie.pid, other.pid}), 20, engines)
    finish(db, engines, expected)
