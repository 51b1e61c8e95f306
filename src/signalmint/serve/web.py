"""The web role: the web app (pages and API) under uvicorn.

Only a process that runs the web role imports this module (and with it FastAPI, uvicorn, every
page and the payment providers): :class:`~signalmint.serve.process.RoleCode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from ..config import Settings
from ..store import Database
from ..web.app import create_app

if TYPE_CHECKING:
    from ..demo.mailcatcher import MailCatcher
    from ..engine.runner import Engine

__all__ = ["serve_web", "web_config"]

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


async def serve_web(
    settings: Settings,
    db: Database,
    engine: Engine | None,
    stop: asyncio.Event,
    run_for: float | None,
    exit_when_done: bool,
    on_ready: Callable[[str], None] | None,
    catcher: MailCatcher | None = None,
) -> None:
    """Serve the web app until a signal or ``run_for`` seconds (or, ``exit_when_done``, until the
    engine's sources have all ended); ``stop`` is set the moment it is asked to stop."""
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
