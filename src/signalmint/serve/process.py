"""Running the whole embedded process: web app, engine and workers in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp

from ..billing.business_schedule import run_business_reports
from ..config import Settings
from ..delivery.runner import run_worker
from ..demo.mailcatcher import MailCatcher
from ..engine.runner import Engine
from ..registry import Registry
from ..store import Database
from ..web.app import create_app
from .wiring import wire_engine

__all__ = ["ROLES", "run_process", "serve", "web_config"]

log = logging.getLogger("signalmint")


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM only ask it to stop (no re-raise after a clean
    shutdown), and ``on_exit`` runs the moment it is asked to, so live streams end at once
    instead of holding the graceful shutdown open."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        self._on_exit = on_exit
        self._exiting = False
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exiting

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value and not self._exiting:
            self._on_exit()
        self._exiting = value

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._ask_exit, sig)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _ask_exit(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        log.info("received %s; shutting down", signal.Signals(sig).name)


ROLES = frozenset({"web", "engine", "worker"})


async def serve(
    settings: Settings,
    db: Database,
    registry: Registry,
    *,
    run_for: float | None = None,
    exit_when_done: bool = False,
    on_ready: Callable[[str], None] | None = None,
    roles: frozenset[str] = ROLES,
    catcher: MailCatcher | None = None,
) -> None:
    """Run the given roles until a signal, ``run_for`` seconds, or (``exit_when_done``) until every
    automation's source has ended: ``web`` (pages and API), ``engine`` (sources, detectors, the
    signal log and fan-out) and ``worker`` (the outbox). Together they are the embedded default.
    ``catcher`` (the demo) is a local SMTP server served alongside, its mail shown by the web app."""
    if catcher is not None:
        await catcher.start()
    engine = wire_engine(settings, db, registry)[0] if "engine" in roles else None
    stop = asyncio.Event()
    worker = None
    if "worker" in roles:
        wake = asyncio.Event()
        if engine is not None:  # one process: the engine's commits wake the worker, no round trip
            engine.listeners.append(lambda _stored: wake.set())
        worker = asyncio.create_task(run_worker(settings, db, stop, wake=wake))
    tasks: list[asyncio.Task[None]] = []
    if "worker" in roles and settings.admin.business_report_on:  # the operator's weekly business report
        tasks.append(asyncio.create_task(run_business_reports(settings, db, stop)))
    if "engine" in roles and any(a.reports for a in settings.automations):
        from ..reports.scheduler import ReportScheduler  # reportlab (0.5 s) loads only where reports are configured

        tasks.append(asyncio.create_task(ReportScheduler(settings, db).run(stop)))
    loop = asyncio.get_running_loop()
    try:
        if "web" in roles:
            await _serve_web(settings, db, engine, stop, run_for, exit_when_done, on_ready, catcher)
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


def web_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How the web role runs under uvicorn.

    uvicorn's own proxy-header handling is off: by default it believes ``X-Forwarded-For``
    from any connection on 127.0.0.1, so a local client could name any address it liked and
    slip past every per-address throttle. The app decides, from ``web.trusted_proxies``
    (:func:`signalmint.web.security.client_address`).
    """
    return uvicorn.Config(
        app,
        host=settings.web.host,
        port=settings.web.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        proxy_headers=False,
        server_header=False,
    )


async def _serve_web(
    settings: Settings,
    db: Database,
    engine: Engine | None,
    stop: asyncio.Event,
    run_for: float | None,
    exit_when_done: bool,
    on_ready: Callable[[str], None] | None,
    catcher: MailCatcher | None = None,
) -> None:
    hub = engine.hub if engine is not None else None
    app = create_app(settings, db, engine=engine, hub=hub, catcher=catcher)
    config = web_config(app, settings)

    def exiting() -> None:
        app.state.ctx.hub.close()
        stop.set()

    server = _Server(config, on_exit=exiting)
    loop = asyncio.get_running_loop()
    if run_for is not None:
        loop.call_later(run_for, setattr, server, "should_exit", True)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        sockets = [s for srv in server.servers for s in (srv.sockets or [])]
        port = sockets[0].getsockname()[1] if sockets else settings.web.port
        if on_ready:
            on_ready(f"http://{settings.web.host}:{port}")
        if exit_when_done and engine is not None:
            await engine.wait()
            log.info("every source has ended; exiting")
            server.should_exit = True

    watcher = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    if not server.started and not server.should_exit:
        raise SystemExit(f"could not listen on {settings.web.host}:{settings.web.port}")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the default install but optional on Windows
        return None
    return uvloop.new_event_loop if sys.platform != "win32" else None


def run_process(
    settings: Settings,
    registry: Registry,
    *,
    run_for: float | None = None,
    exit_when_done: bool = False,
    on_ready: Callable[[str], None] | None = None,
    prepare: Callable[[Database], None] | None = None,
    roles: frozenset[str] = ROLES,
    catcher: MailCatcher | None = None,
) -> None:
    """Open the store, migrate it, ``prepare`` it (the demo seeds accounts), and serve until
    stopped; the store is closed cleanly."""
    db = Database(settings.database)
    try:
        db.migrate()
        if prepare is not None:
            prepare(db)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                serve(
                    settings,
                    db,
                    registry,
                    run_for=run_for,
                    exit_when_done=exit_when_done,
                    on_ready=on_ready,
                    roles=roles,
                    catcher=catcher,
                )
            )
    finally:
        db.close()
