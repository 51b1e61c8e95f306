"""The engine: one asyncio task per automation, from source to committed signals.

Each tick is committed in one transaction: its bars, its signals (appended to
the hash chain) and, every ``checkpoint_every``, the detector's state and the
source cursor. A restart loads the checkpoint and asks the source for bars
after the cursor; bars between the checkpoint and a crash are fed again and
their signals, already stored, are skipped by the idempotency key
(automation, key, bar time, kind). Cancellation (SIGINT/SIGTERM) waits for the
commit under way and saves a last checkpoint: nothing is half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from .config import AutomationConfig, Settings, delivery_channels
from .delivery.fanout import FanOut
from .hub import SignalHub
from .metrics import Metrics
from .pipeline import Pipeline, build_pipeline, describe, signals_from_scores
from .records import Frame, Signal, to_datetime
from .registry import Registry
from .store import Checkpoint, Database, append_signals, load_checkpoint, save_checkpoint, sync_automations
from .store.bars import insert_bars, prune_bars
from .store.outbox import enqueue

__all__ = ["Engine", "commit_tick"]

log = logging.getLogger("signalmint.engine")
PRUNE_EVERY = 60.0


def commit_tick(
    conn: Connection,
    automation: str,
    frame: Frame,
    signals: list[Signal],
    checkpoint: Checkpoint | None,
    fanout: FanOut | None = None,
) -> list[Signal]:
    """The one transaction of a tick (runs on the writer thread): bars, signals, their outbox
    rows (one per entitled subscriber endpoint) and, when due, the checkpoint."""
    now = datetime.now(UTC)
    insert_bars(conn, automation, frame)
    stored = append_signals(conn, automation, signals, now)
    if fanout is not None and stored:
        enqueue(conn, fanout.deliveries_for(conn, stored, now), now)
    if checkpoint is not None:
        save_checkpoint(conn, checkpoint, now)
    return stored


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


class AutomationRunner:
    def __init__(self, config: AutomationConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.status = AutomationStatus(config.name)
        self._checkpointed = 0.0
        self._pruned = 0.0

    async def run(self) -> None:
        """Run until the source ends or the task is cancelled; restart after errors."""
        delay = 1.0
        while True:
            try:
                await self._run_once()
                self.status.finished = True
                return
            except asyncio.CancelledError:
                raise
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
            fingerprint, detector = pickle.loads(checkpoint.detector_state)
        except Exception as exc:
            log.warning("%s: checkpoint unreadable (%s); the detector starts cold", self.config.name, exc)
            return
        if fingerprint != pipeline.fingerprint:
            log.warning("%s: detector settings changed since the checkpoint; it starts cold", self.config.name)
            return
        pipeline.detector = detector

    async def _run_once(self) -> None:
        name = self.config.name
        db, metrics = self.engine.db, self.engine.metrics
        pipeline = build_pipeline(self.config, self.engine.registry)
        checkpoint = await db.read(load_checkpoint, name)
        self._restore(pipeline, checkpoint)
        status = self.status
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
        try:
            async for frame in pipeline.source.stream(checkpoint.cursor):
                if len(frame) == 0:
                    continue
                started = time.perf_counter()
                scores = pipeline.detector.update(frame)
                found = signals_from_scores(name, pipeline.automation.detector_kind, scores)
                cursor = to_datetime(frame.times.max())
                status.bars += len(frame)
                status.keys.update(frame.keys.tolist())
                self._count_rejected(pipeline)
                due = time.monotonic() - self._checkpointed >= self.engine.settings.checkpoint_every.total_seconds()
                snapshot = self._checkpoint(cursor) if due else None
                pending = asyncio.ensure_future(db.write(commit_tick, name, frame, found, snapshot, self.engine.fanout))
                stored = await asyncio.shield(pending)
                pending = None
                if due:
                    self._checkpointed = time.monotonic()
                status.cursor = cursor
                self._after_commit(frame, stored, started)
                await self._maybe_prune()
        finally:
            status.running = False
            metrics.engine_up.labels(name).set(0)
            if pending is not None:  # cancelled mid-commit: let the transaction finish
                with contextlib.suppress(Exception):
                    await pending
                    status.cursor = to_datetime(frame.times.max())
            if status.cursor is not None:
                with contextlib.suppress(Exception):
                    await db.write(self._final_checkpoint, self._checkpoint(status.cursor))
                    log.info("%s: stopped at %s (checkpoint saved)", name, status.cursor)

    @staticmethod
    def _final_checkpoint(conn: Connection, checkpoint: Checkpoint) -> None:
        save_checkpoint(conn, checkpoint, datetime.now(UTC))

    def _checkpoint(self, cursor: datetime) -> Checkpoint:
        blob = pickle.dumps((self._pipeline.fingerprint, self._pipeline.detector), protocol=pickle.HIGHEST_PROTOCOL)
        return Checkpoint(
            automation=self.config.name,
            cursor=cursor,
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
            for signal in stored:
                log.info(
                    "%s: signal #%s %s at %s score %.1f",
                    name,
                    signal.seq,
                    signal.key,
                    signal.time.isoformat(),
                    signal.score,
                )
            self.engine.hub.publish(max(s.id or 0 for s in stored))
            for listener in self.engine.listeners:
                listener(stored)

    async def _maybe_prune(self) -> None:
        retention = self.config.retention
        if retention is None or time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        removed = await self.engine.db.write(prune_bars, self.config.name, retention)
        if removed:
            log.debug("%s: pruned %d bars older than the retention of %s", self.config.name, removed, retention)


class Engine:
    """Runs every enabled automation of ``settings`` as its own task."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        *,
        metrics: Metrics | None = None,
        hub: SignalHub | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.hub = hub or SignalHub()
        self.listeners: list[Callable[[list[Signal]], Any]] = []
        self.fanout = FanOut(delivery_channels(settings))
        self.runners = {a.name: AutomationRunner(a, self) for a in settings.automations if a.enabled}
        self._tasks: list[asyncio.Task[None]] = []

    async def sync(self) -> None:
        """Record the configured automations in the store (their pages exist before any signal)."""
        await self.db.write(
            sync_automations, [describe(a) for a in self.settings.automations if a.enabled], datetime.now(UTC)
        )

    async def start(self) -> None:
        await self.sync()
        for name, runner in self.runners.items():
            self._tasks.append(asyncio.create_task(runner.run(), name=f"automation:{name}"))

    async def stop(self, timeout: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks.clear()

    async def wait(self) -> None:
        """Until every automation's source has ended."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def statuses(self) -> list[AutomationStatus]:
        return [runner.status for runner in self.runners.values()]


def elapsed_since(moment: datetime | None) -> timedelta | None:
    return None if moment is None else datetime.now(UTC) - moment
