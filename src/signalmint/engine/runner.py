"""The engine: one asyncio task per automation, from source to committed signals.

Each tick is committed in one transaction: its bars, its signals (appended to
the hash chain) and, every ``checkpoint_every``, the detector's state and the
source cursor. A restart loads the checkpoint and asks the source for bars
after the cursor; bars between the checkpoint and a crash are fed again and
their signals, already stored, are skipped by the idempotency key
(automation, key, bar time, kind). Cancellation (SIGINT/SIGTERM) waits for the
commit under way and saves a last checkpoint: nothing is half-written.

A source with ``partial_ticks`` set (the ``ccxt`` source with ``batch``) may send one bar time
in several frames of disjoint keys, so a signal commits as soon as its key's bar is in. Its
checkpoints then hold, as the cursor, the newest time known whole (an older one than the
newest fed), with the newest time and the keys already fed at it: a restart asks the source
for everything after the cursor and drops the rows of those keys at that time (:class:`OpenTick`).

The engine knows nothing of the stages after the signal log. Whoever runs it hands it an
``on_commit`` hook, called inside each tick's transaction with the tick's new (not late)
signals: :mod:`signalmint.serve` passes the fan-out (:class:`~signalmint.delivery.fanout.FanOut`),
which writes their outbox rows, so a signal is never stored without its deliveries.

Guardrails (see freshness.py and watchdog.py): gaps in a key's bars are counted and a long
one restarts that key's warm-up (``detector.reset(keys)``; a detector without ``reset``
keeps its state and the gap is only counted); a signal whose bar is older than
``max_signal_age`` when committed is stored with ``late`` set and gets no outbox rows; a
:class:`~signalmint.engine.watchdog.Watchdog` task raises and clears staleness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..config import AutomationConfig, Settings
from ..errors import LeaseLost
from ..pipeline import Pipeline, build_pipeline, describe, signals_from_scores
from ..records import Fence, Frame, Signal, to_datetime
from ..registry import Registry
from ..sources.agent import default_user_agent
from ..store import Checkpoint, Connection, Database, append_signals, load_checkpoint, save_checkpoint, sync_automations
from ..store.bars import insert_bars, prune_bars
from ..store.leases import check_fence
from ..store.outcomes import insert_observations, insert_outcomes, prune_observations
from .faults import Faults
from .freshness import GapTracker, Guard, guard_for
from .hub import SignalHub
from .leases import LeaseKeeper
from .metrics import Metrics
from .outcome_rules import rule_for
from .outcomes import due_outcomes
from .watchdog import OperatorAlerts, Watchdog, open_time_since

__all__ = ["Engine", "OnCommit", "commit_tick", "without_retractions"]

log = logging.getLogger("signalmint.engine")
PRUNE_EVERY = 60.0

#: Called inside a tick's transaction with its new signals that are news (not late) and the
#: commit time; what it writes commits or rolls back with them (the fan-out's outbox rows).
OnCommit = Callable[[Connection, list[Signal], datetime], None]


def commit_tick(
    conn: Connection,
    automation: str,
    frame: Frame,
    signals: list[Signal],
    checkpoint: Checkpoint | None,
    on_commit: OnCommit | None = None,
    observe: str | None = None,
    *,
    fence: Fence | None = None,
    idle_timeout: float | None = None,
) -> list[Signal]:
    """The one transaction of a tick (runs on the writer thread): bars (and the ``observe``
    column's values, which non-market outcomes are measured on), signals, what ``on_commit``
    writes for them (the outbox rows, one per entitled subscriber endpoint) and, when due, the
    checkpoint. With a ``fence`` it first proves the engine still holds the automation's lease
    at that epoch (:class:`~signalmint.errors.LeaseLost` otherwise, and nothing is written)."""
    now = datetime.now(UTC)
    if fence is not None:
        check_fence(conn, automation, fence, now, idle_timeout=idle_timeout)
    insert_bars(conn, automation, frame)
    if observe:
        insert_observations(conn, automation, frame, observe)
    stored = append_signals(conn, automation, signals, now)
    alerts = [s for s in stored if not s.late]  # late data is recorded, never sold as news
    if on_commit is not None and alerts:
        on_commit(conn, alerts, now)
    if checkpoint is not None:
        save_checkpoint(conn, checkpoint, now)
    return stored


@contextlib.contextmanager
def _refused(automation: str) -> Iterator[None]:
    """Log a write the lease fence refused (on the way out of a stopped automation), then re-raise."""
    try:
        yield
    except LeaseLost as exc:
        log.warning("%s: %s", automation, exc)
        raise


def without_retractions(frame: Frame, automation: str = "") -> Frame:
    """The rows a detector may see: a row whose ``retracted`` metric is set withdraws an earlier
    row (a block reorganised away, sources/evm.py) and is dropped here, logged."""
    flag = frame.columns.get("retracted")
    if flag is None or len(frame) == 0:
        return frame
    gone = np.nan_to_num(flag) != 0
    if not gone.any():
        return frame
    log.warning("%s: %d row(s) retracted by the source (a chain reorganisation)", automation, int(gone.sum()))
    return frame.take(~gone)


@dataclass
class OpenTick:
    """What a runner fed of a source with ``partial_ticks``: ``settled`` is the newest bar time
    known whole (ns since the epoch, None: none yet), ``time`` the newest time fed and ``keys``
    the keys fed at it. After a restart ``skip`` holds the keys fed at ``time`` before it."""

    settled: int | None = None
    time: int | None = None
    keys: set[str] = field(default_factory=set)
    skip: set[str] = field(default_factory=set)

    def admit(self, frame: Frame) -> Frame:
        """``frame`` without the rows fed before a restart; then ``frame`` is taken as fed."""
        times = frame.times.view(np.int64)
        if self.skip and self.time is not None:
            fed = (times == self.time) & np.isin(frame.keys, list(self.skip))
            if times.max() > self.time:
                self.skip = set()
            if fed.any():
                frame = frame.take(~fed)
                times = frame.times.view(np.int64)
        if len(frame) == 0:
            return frame
        newest = int(times.max())
        if self.time is None or newest > self.time:
            older = times[times < newest]
            candidates = [t for t in (self.time, int(older.max()) if len(older) else None) if t is not None]
            self.settled = max(candidates) if candidates else self.settled
            self.time, self.keys = newest, set()
        self.keys.update(frame.keys[times == newest].tolist())
        return frame

    def state(self) -> dict[str, Any]:
        return {"settled": self.settled, "time": self.time, "keys": sorted(self.keys)}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> OpenTick:
        keys = set(state.get("keys", ()))
        return cls(settled=state.get("settled"), time=state.get("time"), keys=set(keys), skip=keys)


@dataclass
class AutomationStatus:
    name: str
    running: bool = False
    cursor: datetime | None = None
    bars: int = 0
    signals: int = 0
    keys: set[str] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    restarts: int = 0
    finished: bool = False
    started_at: datetime | None = None  # when the engine task last started (staleness counts from it)
    last_arrival: datetime | None = None  # when the newest frame arrived (engine clock)
    stale_since: datetime | None = None  # set while stale: data delayed since then
    gaps: int = 0  # bars that skipped at least one candle of their key
    missing_bars: int = 0  # candles skipped in those gaps
    warmup_resets: int = 0  # keys whose warm-up restarted after a long gap
    late_signals: int = 0  # signals stored as late (not alerted)
    cadence: timedelta | None = None
    stale_after: timedelta | None = None
    max_signal_age: timedelta | None = None
    market_open: bool | None = None
    held: bool = False  # this engine holds the automation's lease (and runs it)
    epoch: int = 0  # the lease's epoch while held

    def health(self, now: datetime) -> dict[str, Any]:
        """The freshness part of this automation's health, as JSON (``/healthz``, the status page)."""

        def seconds(value: timedelta | None) -> float | None:
            return None if value is None else value.total_seconds()

        return {
            "stale": self.stale_since is not None,
            "stale_since": self.stale_since.isoformat() if self.stale_since else None,
            "last_bar_age_seconds": seconds(now - self.cursor) if self.cursor else None,
            "last_arrival": self.last_arrival.isoformat() if self.last_arrival else None,
            "cadence_seconds": seconds(self.cadence),
            "stale_after_seconds": seconds(self.stale_after),
            "max_signal_age_seconds": seconds(self.max_signal_age),
            "market_open": self.market_open,
            "gaps": self.gaps,
            "missing_bars": self.missing_bars,
            "warmup_resets": self.warmup_resets,
            "late_signals": self.late_signals,
            "lease_held": self.held,
            "lease_epoch": self.epoch if self.held else None,
        }


class AutomationRunner:
    def __init__(self, config: AutomationConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.status = AutomationStatus(config.name)
        self._checkpointed = 0.0
        self._pruned = 0.0
        self._measured = 0.0
        self._measuring: asyncio.Task[int] | None = None
        self.guard: Guard | None = None
        self.gaps: GapTracker | None = None
        self.fence: Fence | None = None  # the lease this runner commits under (None: unfenced)
        self.open_tick: OpenTick | None = None  # a source with partial ticks: what is fed of the newest
        detector = config.detector
        self.outcome_rule = rule_for(detector.kind, detector.options) if config.outcomes is not None else None
        self._observe = self.outcome_rule.column if self.outcome_rule and self.outcome_rule.observed else None

    def guard_limit(self) -> str:
        return str(self.status.stale_after) if self.status.stale_after else "none"

    def is_stale(self, now: datetime) -> bool:
        """No bar for ``stale_after`` of open market time (never while closed or finished)."""
        limit = self.status.stale_after
        if limit is None or self.status.finished or self.status.started_at is None or not self.status.held:
            return False
        elapsed = open_time_since(self, now)
        self.status.market_open = elapsed is not None
        return elapsed is not None and elapsed > limit

    def _set_guard(self, pipeline: Pipeline) -> None:
        guard = self.guard = guard_for(self.config, pipeline.source)
        status = self.status
        status.cadence, status.stale_after, status.max_signal_age = (
            guard.cadence,
            guard.stale_after,
            guard.max_signal_age,
        )
        self.gaps = GapTracker(guard.cadence, guard.calendar, guard.gap_reset) if guard.cadence else None

    def _observe_gaps(self, pipeline: Pipeline, frame: Frame) -> None:
        if self.gaps is None:
            return
        gaps, missing, reset = self.gaps.observe(frame)
        if not gaps:
            return
        status, metrics = self.status, self.engine.metrics
        status.gaps += gaps
        status.missing_bars += missing
        metrics.gaps.labels(self.config.name).inc(gaps)
        metrics.missing_bars.labels(self.config.name).inc(missing)
        restart = getattr(pipeline.detector, "reset", None)
        if reset and restart is not None:
            restart(reset)
            status.warmup_resets += len(reset)
            log.info("%s: a gap longer than %s in %d key(s); their warm-up restarts", self.config.name,
                     self.gaps.reset_after, len(reset))  # fmt: skip

    def _mark_late(self, found: list[Signal], now: datetime) -> list[Signal]:
        limit = self.status.max_signal_age
        if limit is None or not found:
            return found
        return [replace(s, late=True) if now - s.time > limit else s for s in found]

    async def run(self) -> None:
        """Run until the source ends or the task is cancelled; restart after errors."""
        await self.engine.faults.wait_for_gate()
        delay = 1.0
        while True:
            try:
                await self._run_once()
                self.status.finished = True
                return
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:  # another engine runs it now: stop, never restart here
                self.status.last_error = str(exc)
                log.warning("%s: %s; this engine stops running it", self.config.name, exc)
                return
            except Exception as exc:  # an engine keeps going; the error is logged and counted
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                self.status.restarts += 1
                self.engine.metrics.engine_errors.labels(self.config.name).inc()
                log.exception("automation %s failed; restarting in %.0fs", self.config.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _restore(self, pipeline: Pipeline, checkpoint: Checkpoint) -> None:
        if checkpoint.detector_state is None:
            return
        try:
            restored = pickle.loads(checkpoint.detector_state)
            fingerprint, detector = restored[0], restored[1]
        except Exception as exc:
            log.warning("%s: checkpoint unreadable (%s); the detector starts cold", self.config.name, exc)
            return
        if fingerprint != pipeline.fingerprint:
            log.warning("%s: detector settings changed since the checkpoint; it starts cold", self.config.name)
            return
        pipeline.detector = detector
        extra = restored[2] if len(restored) > 2 else {}
        if self.open_tick is not None and "open_tick" in extra:
            self.open_tick = OpenTick.restore(extra["open_tick"])
        if self.gaps is not None and "gaps" in extra:
            self.gaps.restore(extra["gaps"])
        for name in ("gaps", "missing_bars", "warmup_resets", "late_signals"):
            setattr(self.status, name, int(extra.get("counts", {}).get(name, 0)))

    async def _run_once(self) -> None:
        name = self.config.name
        db, metrics = self.engine.db, self.engine.metrics
        pipeline = build_pipeline(self.config, self.engine.registry)
        if hasattr(pipeline.source, "user_agent") and pipeline.source.user_agent is None:  # web sources name the site
            pipeline.source.user_agent = default_user_agent(self.engine.settings.base_url)
        self._set_guard(pipeline)
        self.open_tick = OpenTick() if getattr(pipeline.source, "partial_ticks", False) else None
        checkpoint = await db.read(load_checkpoint, name)
        self._restore(pipeline, checkpoint)
        status = self.status
        if status.started_at is None:  # kept across restarts after errors: a crash loop still goes stale
            status.started_at = self.engine.clock()
        status.cursor = checkpoint.cursor
        status.bars = checkpoint.bars_total
        status.rejected = Counter(checkpoint.rejected)
        self._base_rejected = Counter(checkpoint.rejected)
        self._keys = checkpoint.keys
        self._pipeline = pipeline
        status.running = True
        metrics.engine_up.labels(name).set(1)
        log.info(
            "%s: started (%s -> %s), resuming after %s",
            name,
            pipeline.automation.source_kind,
            pipeline.automation.detector_kind,
            checkpoint.cursor or "the beginning",
        )
        pending: asyncio.Future[list[Signal]] | None = None
        frames = pipeline.source.stream(checkpoint.cursor)
        try:
            async for raw in frames:
                frame = without_retractions(raw, name)
                if self.open_tick is not None and len(frame):
                    frame = self.open_tick.admit(frame)
                if len(frame) == 0:
                    continue
                started = time.perf_counter()
                arrived = self.engine.clock()
                status.last_arrival = arrived
                if status.stale_since is not None:
                    self.engine.watchdog.poke()
                self._observe_gaps(pipeline, frame)
                scores = pipeline.detector.update(frame)
                found = signals_from_scores(name, pipeline.automation.detector_kind, scores)
                found = self._mark_late(found, arrived)
                cursor = to_datetime(frame.times.max())
                status.bars += len(frame)
                status.keys.update(frame.keys.tolist())
                self._count_rejected(pipeline)
                due = time.monotonic() - self._checkpointed >= self.engine.settings.checkpoint_every.total_seconds()
                snapshot = self._checkpoint(cursor) if due else None
                engine = self.engine
                engine.faults.before_commit(engine.attempted, len(found))
                engine.attempted += len(found)  # counted now: two automations' commits may be under way at once
                fenced: dict[str, Any] = {"fence": self.fence, "idle_timeout": engine.leases.idle_timeout}
                pending = asyncio.ensure_future(
                    db.write(commit_tick, name, frame, found, snapshot, engine.on_commit, self._observe, **fenced)
                )
                stored = await asyncio.shield(pending)
                pending = None
                if stored:
                    engine.committed += len(stored)
                    engine.faults.after_commit(engine.committed - len(stored), engine.committed)
                engine.fed += len(frame)
                engine.faults.after_bars(engine.fed - len(frame), engine.fed)
                if due:
                    self._checkpointed = time.monotonic()
                status.cursor = cursor
                self._after_commit(frame, stored, started)
                await self._maybe_prune()
                self._maybe_measure()
            if self.config.outcomes is not None:  # a replay ended: measure what it left due
                await self.measure_outcomes()
        finally:
            if self._measuring is not None:  # let it finish (one read, one short write): the store closes next
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._measuring)
            status.running = False
            metrics.engine_up.labels(name).set(0)
            if pending is not None:  # cancelled mid-commit: let the transaction finish
                with contextlib.suppress(Exception), _refused(name):
                    await pending
                    status.cursor = to_datetime(frame.times.max())
            if status.cursor is not None:
                with contextlib.suppress(Exception), _refused(name):
                    final = self._checkpoint(status.cursor)
                    await db.write(self._final_checkpoint, final, self.fence, self.engine.leases.idle_timeout)
                    log.info("%s: stopped at %s (checkpoint saved)", name, status.cursor)
            close = getattr(frames, "aclose", None)  # then the source releases its connections (ccxt, websockets)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), timeout=5)

    @staticmethod
    def _final_checkpoint(conn: Connection, checkpoint: Checkpoint, fence: Fence | None, idle: float) -> None:
        now = datetime.now(UTC)
        if fence is not None:  # a checkpoint is the lease holder's to write, like a signal
            check_fence(conn, checkpoint.automation, fence, now, idle_timeout=idle)
        save_checkpoint(conn, checkpoint, now)

    def _checkpoint(self, cursor: datetime) -> Checkpoint:
        status = self.status
        extra: dict[str, Any] = {
            "gaps": self.gaps.state() if self.gaps is not None else {},
            "counts": {n: getattr(status, n) for n in ("gaps", "missing_bars", "warmup_resets", "late_signals")},
        }
        resume: datetime | None = cursor
        if self.open_tick is not None:  # resume after the newest whole time; the keys fed after it are skipped
            extra["open_tick"] = self.open_tick.state()
            settled = self.open_tick.settled
            resume = None if settled is None else to_datetime(settled)
        blob = pickle.dumps(
            (self._pipeline.fingerprint, self._pipeline.detector, extra), protocol=pickle.HIGHEST_PROTOCOL
        )
        return Checkpoint(
            automation=self.config.name,
            cursor=resume,
            detector_state=blob,
            bars_total=self.status.bars,
            keys=max(self._keys, len(self.status.keys)),
            rejected=dict(self.status.rejected),
        )

    def _count_rejected(self, pipeline: Pipeline) -> None:
        now = self._base_rejected + Counter(pipeline.source.rejected)
        for reason, count in now.items():
            delta = count - self.status.rejected.get(reason, 0)
            if delta > 0:
                self.engine.metrics.rejected.labels(self.config.name, reason).inc(delta)
        self.status.rejected = now

    def _after_commit(self, frame: Frame, stored: list[Signal], started: float) -> None:
        name, metrics = self.config.name, self.engine.metrics
        metrics.bars.labels(name).inc(len(frame))
        metrics.tick_seconds.labels(name).observe(time.perf_counter() - started)
        if self.status.cursor is not None:
            metrics.last_bar.labels(name).set(self.status.cursor.timestamp())
        if stored:
            self.status.signals += len(stored)
            metrics.signals.labels(name).inc(len(stored))
            late = sum(s.late for s in stored)
            if late:
                self.status.late_signals += late
                metrics.late_signals.labels(name).inc(late)
            for signal in stored:
                log.info(
                    "%s: signal #%s %s at %s score %.1f%s",
                    name,
                    signal.seq,
                    signal.key,
                    signal.time.isoformat(),
                    signal.score,
                    " (late: recorded, not alerted)" if signal.late else "",
                )
            self.engine.hub.publish(max(s.id or 0 for s in stored))
            for listener in self.engine.listeners:
                listener(stored)

    def _maybe_measure(self) -> None:
        """Every ``outcomes.every``, measure due outcomes in a task of its own: ticks never wait for it."""
        spec = self.config.outcomes
        if spec is None or (self._measuring is not None and not self._measuring.done()):
            return
        if time.monotonic() - self._measured < spec.every.total_seconds():
            return
        self._measured = time.monotonic()
        self._measuring = asyncio.create_task(self.measure_outcomes(), name=f"outcomes:{self.config.name}")

    async def measure_outcomes(self) -> int:
        """Compute (on a reader thread) and store the outcomes whose horizon has passed; how many."""
        spec = self.config.outcomes
        if spec is None:
            return 0
        try:
            found = await self.engine.db.read(due_outcomes, self.config.name, spec, 500, self.outcome_rule)
            return await self.engine.db.write(insert_outcomes, found, datetime.now(UTC)) if found else 0
        except Exception:  # an outcome is never worth stopping the automation for
            log.exception("%s: measuring outcomes failed", self.config.name)
            return 0

    async def _maybe_prune(self) -> None:
        retention = self.config.retention
        if retention is None or time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        removed = await self.engine.db.write(prune_bars, self.config.name, retention)
        if self._observe:
            removed += await self.engine.db.write(prune_observations, self.config.name, retention)
        if removed:
            log.debug("%s: pruned %d bars older than the retention of %s", self.config.name, removed, retention)


class Engine:
    """Runs the enabled automations of ``settings`` it holds a lease on, each as its own task
    (alone, an engine holds them all; see :mod:`signalmint.engine.leases` for how engines share)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        *,
        metrics: Metrics | None = None,
        hub: SignalHub | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watch_every: float | None = 1.0,
        on_commit: OnCommit | None = None,
        alerts: OperatorAlerts | None = None,
        lease_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_rounds: bool = True,
    ) -> None:
        """``clock`` is the time staleness and lateness are measured by (tests pass a virtual
        one); ``watch_every`` is the staleness check's period in seconds (None: no background
        check, the caller runs ``watchdog.check()``). ``on_commit`` runs in each tick's
        transaction (see :data:`OnCommit`; without it signals are only logged) and ``alerts``
        tells the operator about staleness (without it the watchdog only records it);
        :func:`signalmint.serve.wire_engine` plugs in the fan-out and the operator's channels.
        ``lease_clock`` is the time leases are measured by; ``lease_rounds=False``: no background
        lease rounds, the caller runs ``leases.tick()`` (tests with a virtual lease clock)."""
        self.settings = settings
        self.clock = clock
        self.watch_every = watch_every
        self.db = db
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.hub = hub or SignalHub()
        self.listeners: list[Callable[[list[Signal]], Any]] = []
        self.on_commit = on_commit
        self.runners = {a.name: AutomationRunner(a, self) for a in settings.automations if a.enabled}
        self.watchdog = Watchdog(self, clock, alerts)
        self.leases = LeaseKeeper(self, lease_clock)
        self.lease_rounds = lease_rounds
        self.faults = Faults.from_env()
        if self.faults != Faults():
            log.warning("fault injection armed (a test): %s", self.faults)
        self.committed = 0  # signals this process stored (the fault-injection hooks count them)
        self.attempted = 0  # signals this process sent to be committed
        self.fed = 0  # bars this process committed (the fault-injection hooks count them)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._stopped = False

    async def sync(self) -> None:
        """Record the configured automations in the store (their pages exist before any signal)."""
        await self.db.write(
            sync_automations, [describe(a) for a in self.settings.automations if a.enabled], datetime.now(UTC)
        )

    async def start(self) -> None:
        self._stopped = False
        await self.sync()
        await self.watchdog.load()
        await self.leases.start()  # claims this engine's share and starts those automations
        if self.lease_rounds:
            self._keeper = asyncio.create_task(self.leases.run(), name="leases")
        self._watch: asyncio.Task[None] | None = None
        if self.watch_every is not None:
            self._watch = asyncio.create_task(self.watchdog.run(self.watch_every), name="watchdog")

    def start_runner(self, name: str, fence: Fence) -> None:
        """Run automation ``name`` under the lease ``fence`` (the lease keeper claimed it)."""
        runner = self.runners[name]
        runner.fence = fence
        runner.status.held, runner.status.epoch = True, fence.epoch
        runner.status.finished = False
        task = asyncio.create_task(runner.run(), name=f"automation:{name}")
        task.add_done_callback(lambda _: self._changed.set())
        self._tasks[name] = task

    async def stop_runner(self, name: str, timeout: float = 10.0) -> None:
        """Stop automation ``name`` here (it saves its checkpoint on the way out)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        runner = self.runners[name]
        runner.status.held = False
        self._changed.set()

    async def stop(self, timeout: float = 10.0) -> None:
        for attr in ("_watch", "_keeper"):
            task = getattr(self, attr, None)
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=timeout)
                setattr(self, attr, None)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._tasks.clear()
        await self.leases.stop()
        for runner in self.runners.values():
            runner.status.held = False
        self._stopped = True
        self._changed.set()
        await self.watchdog.close()

    async def wait(self) -> None:
        """Until every automation's source has ended (for an engine running them all: with other
        engines sharing the automations, this waits for theirs too and may not return)."""
        while not self._stopped and not all(r.status.finished for r in self.runners.values()):
            self._changed.clear()
            await self._changed.wait()

    def health(self) -> list[dict[str, Any]]:
        """Every automation's freshness (stale, since when, last bar age, gaps, late signals), as
        of the engine's clock: what ``/healthz`` shows, for any page that wants it."""
        now = self.clock()
        return [{"name": r.status.name, **r.status.health(now)} for r in self.runners.values()]

    def source(self, name: str) -> Any | None:
        """The running source of automation ``name`` (what the push ingest route feeds), or None
        when it is not running in this engine (unknown, disabled, or between restarts)."""
        runner = self.runners.get(name)
        pipeline = getattr(runner, "_pipeline", None) if runner is not None else None
        if runner is None or pipeline is None or not runner.status.running or not runner.status.held:
            return None
        return pipeline.source

    def statuses(self) -> list[AutomationStatus]:
        return [runner.status for runner in self.runners.values()]


def elapsed_since(moment: datetime | None) -> timedelta | None:
    return None if moment is None else datetime.now(UTC) - moment
