"""Running the whole embedded process: web app, engine and workers in one loop, or some of them.

Each role's code is handed in (:class:`RoleCode`) by the caller, which imports it for the roles
it runs only: ``signalmint run --role worker`` never loads the engine nor the web app (FastAPI,
uvicorn, every page, the Stripe SDK), ``--role engine`` never loads the web app, and this module
imports none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Settings
from ..registry import Registry
from ..store import Database

if TYPE_CHECKING:
    from ..demo.mailcatcher import MailCatcher
    from ..engine.runner import Engine

__all__ = ["ROLES", "RoleCode", "run_process", "serve"]

log = logging.getLogger("signalmint")

ROLES = frozenset({"web", "engine", "worker"})


class WireEngine(Protocol):
    """:func:`signalmint.serve.wiring.wire_engine`."""

    def __call__(self, settings: Settings, db: Database, registry: Registry) -> tuple[Engine, object]: ...


class RunWorker(Protocol):
    """:func:`signalmint.delivery.runner.run_worker`."""

    def __call__(
        self, settings: Settings, db: Database, stop: asyncio.Event, *, wake: asyncio.Event | None = None
    ) -> Coroutine[Any, Any, object]: ...


class ServeWeb(Protocol):
    """:func:`signalmint.serve.web.serve_web`."""

    def __call__(
        self,
        settings: Settings,
        db: Database,
        engine: Engine | None,
        stop: asyncio.Event,
        run_for: float | None,
        exit_when_done: bool,
        on_ready: Callable[[str], None] | None,
        catcher: MailCatcher | None = None,
    ) -> Awaitable[None]: ...


#: :func:`signalmint.billing.business_schedule.run_business_reports`.
RunBusinessReports = Callable[[Settings, Database, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class RoleCode:
    """The code of the roles a process runs (``None``: that role does not run here).

    The caller imports it for its roles only, so a process loads what it runs and no more (the
    command line: :func:`signalmint.cli.role_code`). ``business_reports`` runs beside the worker
    when the operator's weekly business report is on.
    """

    engine: WireEngine | None = None
    worker: RunWorker | None = None
    web: ServeWeb | None = None
    business_reports: RunBusinessReports | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(name for name in ROLES if getattr(self, name) is not None)


async def serve(
    settings: Settings,
    db: Database,
    registry: Registry,
    code: RoleCode,
    *,
    run_for: float | None = None,
    exit_when_done: bool = False,
    on_ready: Callable[[str], None] | None = None,
    catcher: MailCatcher | None = None,
) -> None:
    """Run the roles ``code`` has until a signal, ``run_for`` seconds, or (``exit_when_done``) until
    every automation's source has ended: ``web`` (pages and API), ``engine`` (sources, detectors,
    the signal log and fan-out) and ``worker`` (the outbox). Together they are the embedded default.
    ``catcher`` (the demo) is a local SMTP server served alongside, its mail shown by the web app."""
    if catcher is not None:
        await catcher.start()
    engine = code.engine(settings, db, registry)[0] if code.engine is not None else None
    stop = asyncio.Event()
    worker = None
    if code.worker is not None:
        wake = asyncio.Event()
        if engine is not None:  # one process: the engine's commits wake the worker, no round trip
            engine.listeners.append(lambda _stored: wake.set())
        worker = asyncio.create_task(code.worker(settings, db, stop, wake=wake))
    tasks: list[asyncio.Task[None]] = []
    if code.worker is not None and code.business_reports is not None:  # the operator's weekly business report
        tasks.append(asyncio.create_task(code.business_reports(settings, db, stop)))
    if engine is not None and any(a.reports for a in settings.automations):
        from ..reports.scheduler import ReportScheduler  # reportlab (0.5 s) loads only where reports are configured

        tasks.append(asyncio.create_task(ReportScheduler(settings, db).run(stop)))
    loop = asyncio.get_running_loop()
    try:
        if code.web is not None:
            await code.web(settings, db, engine, stop, run_for, exit_when_done, on_ready, catcher)
        else:
            await _run_headless(engine, stop, run_for, exit_when_done, on_ready, loop)
    finally:
        stop.set()
        if worker is not None:
            await asyncio.wait({worker}, timeout=30)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if catcher is not None:
            await catcher.close()


async def _run_headless(
    engine: Engine | None,
    stop: asyncio.Event,
    run_for: float | None,
    exit_when_done: bool,
    on_ready: Callable[[str], None] | None,
    loop: asyncio.AbstractEventLoop,
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if run_for is not None:
        loop.call_later(run_for, stop.set)
    if engine is not None:
        await engine.start()
    if on_ready:
        on_ready("")
    try:
        if exit_when_done and engine is not None:
            done = asyncio.create_task(engine.wait())
            await asyncio.wait({done, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        else:
            await stop.wait()
    finally:
        if engine is not None:
            await engine.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the default install but optional on Windows
        return None
    return uvloop.new_event_loop if sys.platform != "win32" else None


def run_process(
    settings: Settings,
    registry: Registry,
    code: RoleCode,
    *,
    migrate: Callable[[Database], None],
    run_for: float | None = None,
    exit_when_done: bool = False,
    on_ready: Callable[[str], None] | None = None,
    prepare: Callable[[Database], None] | None = None,
    catcher: MailCatcher | None = None,
) -> None:
    """Open the store, ``migrate`` it (to the code's schema), ``prepare`` it (the demo seeds
    accounts), and serve the roles ``code`` has until stopped; the store is closed cleanly."""
    db = Database(settings.database)
    try:
        migrate(db)
        if prepare is not None:
            prepare(db)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                serve(
                    settings,
                    db,
                    registry,
                    code,
                    run_for=run_for,
                    exit_when_done=exit_when_done,
                    on_ready=on_ready,
                    catcher=catcher,
                )
            )
    finally:
        db.close()
