"""Engines sharing the portfolio: each engine runs the automations it holds a lease on.

Every engine process beats a heartbeat (``engine_nodes``) and keeps a lease per automation it
runs (``engine_leases``, SQL in :mod:`signalmint.store.leases`). Each round, every
``engine.heartbeat``:

1. it renews its heartbeat and its leases; a lease it finds taken (it was paused longer than
   ``engine.lease``) stops that automation at once;
2. it counts the live engines (heartbeat not run out) and takes its fair share, at most
   ``ceil(automations / live engines)``: above it, it hands the surplus over (the automation
   stops, saves its checkpoint, and its lease is released for another engine to claim); below
   it, it claims free or expired leases. A second engine therefore gets half, a third a third;
3. a claimed automation starts from its checkpoint; bars after the checkpoint are fed again
   and the signals they give, already stored, are skipped by the log's idempotency key.

An engine that dies keeps its leases until they run out: a live engine takes them over
within ``engine.lease`` plus one heartbeat. Every commit is fenced by the lease's epoch
(:func:`~signalmint.store.leases.check_fence`), so a paused engine that wakes up after the
take-over cannot write a signal. At start, an engine frees at once the leases of engines on
this same host whose process is gone (a restart after ``kill -9`` does not wait a lease out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..records import Fence, Lease
from ..store import Connection
from ..store.leases import (
    beat,
    claim,
    end_stuck_holder,
    ensure_leases,
    expire_holder,
    guard_idle,
    list_leases,
    list_nodes,
    live_engines,
    prune_nodes,
    release,
    renew,
)

if TYPE_CHECKING:
    from .runner import Engine

__all__ = ["LeaseKeeper", "node_host", "pid_alive"]

log = logging.getLogger("signalmint.leases")


def node_host() -> str:
    """This machine as far as process ids go: the host name and the pid namespace (two containers
    with the same host name do not share pids)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie waiting to be reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class LeaseKeeper:
    """One engine's leases: claims its share, renews, hands over, and fences its commits."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self.lease = engine.settings.engine.lease
        self.heartbeat = engine.settings.engine.heartbeat
        self.host = node_host()
        self.pid = os.getpid()
        self.holder = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(3)}"
        self.held: dict[str, int] = {}  # automation -> epoch
        self.live = 0
        self.target = 0
        self._lock = asyncio.Lock()
        self._unstuck_refused: set[tuple[str, str]] = set()  # (automation, holder) said once

    def fence(self, automation: str) -> Fence | None:
        epoch = self.held.get(automation)
        return None if epoch is None else Fence(self.holder, epoch)

    @property
    def idle_timeout(self) -> float:
        """How long PostgreSQL lets a fenced commit sit idle before ending its session."""
        return self.lease.total_seconds()

    async def start(self) -> None:
        """Lease rows for every configured automation, free the leases of dead engines on this host,
        then the first round (a lone engine takes everything here, before any source starts)."""
        now = self.clock()
        await self.engine.db.write(ensure_leases, list(self.engine.runners), now)
        await self._free_dead_neighbours(now)
        await self.tick()

    async def _free_dead_neighbours(self, now: datetime) -> None:
        for holder, host, pid, expires_at in await self.engine.db.read(list_nodes):
            if host != self.host or holder == self.holder or expires_at <= now or pid_alive(pid):
                continue
            freed = await self.engine.db.write(expire_holder, holder, now)
            log.warning("engine %s on this host is gone (pid %d): its automations %s are free now", holder, pid,
                        ", ".join(freed) or "(none)")  # fmt: skip

    async def run(self) -> None:
        """A round every ``engine.heartbeat`` until cancelled; a failed round is logged and retried."""
        every = self.heartbeat.total_seconds()
        while True:
            await asyncio.sleep(every)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease round failed (retrying in %.1fs)", every)

    async def tick(self) -> None:
        """One round: heartbeat and renewals, then hand over or claim to reach the fair share."""
        async with self._lock:
            db, engine = self.engine.db, self.engine
            now = self.clock()
            until = now + self.lease
            lost = await db.write(self._beat_and_renew, now, until)
            for name in sorted(lost):
                epoch = self.held.pop(name)
                engine.metrics.leases_lost.labels(name).inc()
                log.warning("%s: lease lost (epoch %d was taken over while this engine was away); stopping it",
                            name, epoch)  # fmt: skip
                await engine.stop_runner(name)
            self.live = max(await db.read(live_engines, now), 1)
            self.target = math.ceil(len(engine.runners) / self.live)
            if len(self.held) > self.target:
                await self._hand_over(len(self.held) - self.target)
            elif len(self.held) < self.target:
                await self._claim(now, until)
            self._export()

    def _beat_and_renew(self, conn: Connection, now: datetime, until: datetime) -> set[str]:
        guard_idle(conn, self.idle_timeout)
        beat(conn, self.holder, self.host, self.pid, now, until)
        prune_nodes(conn, now - 20 * self.lease)
        return renew(conn, self.held, self.holder, now, until)

    def _claim_one(self, conn: Connection, name: str, now: datetime, until: datetime) -> Lease | None:
        guard_idle(conn, self.idle_timeout)  # every transaction that locks lease rows can be ended
        return claim(conn, name, self.holder, now, until)

    def _release_one(self, conn: Connection, name: str, fence: Fence, now: datetime) -> bool:
        guard_idle(conn, self.idle_timeout)
        return release(conn, name, fence, now)

    async def _hand_over(self, count: int) -> None:
        engine = self.engine
        for name in sorted(self.held, reverse=True)[:count]:
            await engine.stop_runner(name)  # the automation saves its checkpoint (fenced) first
            fence = Fence(self.holder, self.held.pop(name))
            await engine.db.write(self._release_one, name, fence, self.clock())
            log.info("%s: handed over (%d engines share %d automations; this one keeps %d)", name, self.live,
                     len(engine.runners), len(self.held))  # fmt: skip

    async def _claim(self, now: datetime, until: datetime) -> None:
        engine = self.engine
        leases = await engine.db.read(list_leases)
        for lease in leases:
            if len(self.held) >= self.target:
                return
            name = lease.automation
            if name not in engine.runners or name in self.held or lease.live(now):
                continue
            got = await engine.db.write(self._claim_one, name, now, until)
            if got is None:  # another engine was quicker, or its holder is stuck mid-commit
                await self._end_stuck(lease, now)
                continue
            self.held[name] = got.epoch
            self._announce(lease, got)
            engine.start_runner(name, Fence(self.holder, got.epoch))

    async def _end_stuck(self, lease: Lease, now: datetime) -> None:
        """A lease that ran out a lease period ago but cannot be claimed: its row is locked by a
        holder paused mid-commit; end that holder's session (the next round claims the lease)."""
        grace = self.idle_timeout
        if lease.holder is None or now - lease.expires_at < timedelta(seconds=grace):
            return
        try:
            pid = await self.engine.db.write(end_stuck_holder, lease.automation, now - timedelta(seconds=grace), grace)
        except Exception as exc:  # e.g. another database role's session: its idle timeout is what is left
            if (lease.automation, lease.holder) not in self._unstuck_refused:  # said once, not every round
                self._unstuck_refused.add((lease.automation, lease.holder))
                log.warning("%s: cannot end the stuck session of %s: %s", lease.automation, lease.holder, exc)
            return
        if pid is not None:
            late = (now - lease.expires_at).total_seconds()
            log.warning("%s: ended the database session (pid %d) of %s, stuck mid-commit %.1fs after its lease ran out",
                        lease.automation, pid, lease.holder, late)  # fmt: skip

    def _announce(self, before: Lease, got: Lease) -> None:
        name, previous = got.automation, got.previous_holder
        if before.holder is not None and previous != self.holder:
            self.engine.metrics.lease_takeovers.labels(name).inc()
            log.warning("%s: TAKE-OVER from %s, whose lease ran out at %s; epoch %d, resuming from its checkpoint",
                        name, previous, before.expires_at.isoformat(), got.epoch)  # fmt: skip
        else:
            log.info("%s: claimed (epoch %d%s)", name, got.epoch, f", released by {previous}" if previous else "")

    async def stop(self) -> None:
        """Release every lease (the automations have stopped and saved their checkpoints) and the
        heartbeat: another engine may claim them at its next round."""
        async with self._lock:
            try:
                await self.engine.db.write(expire_holder, self.holder, self.clock())
            except Exception:  # the store is gone: the leases run out by themselves
                log.exception("releasing the leases failed; other engines take them over in %s", self.lease)
            self.held.clear()
            self._export()

    def _export(self) -> None:
        metrics = self.engine.metrics
        metrics.leases_held.set(len(self.held))
        metrics.live_engines.set(self.live)
        for name in self.engine.runners:
            metrics.lease_epoch.labels(name).set(self.held.get(name, 0))

    def state(self) -> dict[str, Any]:
        """This engine's lease state, as JSON (``/healthz``)."""
        return {
            "holder": self.holder,
            "live_engines": self.live,
            "fair_share": self.target,
            "held": dict(sorted(self.held.items())),
            "lease_seconds": self.lease.total_seconds(),
            "heartbeat_seconds": self.heartbeat.total_seconds(),
        }
