"""``create_app(settings, db)``: the ASGI application, built from what it is given."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..config import Settings
from ..hub import SignalHub
from ..metrics import Metrics
from ..store import Database
from .context import AppContext
from .filters import register_filters
from .routes import api, pages

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["create_app"]

HERE = Path(__file__).parent
log = logging.getLogger("signalmint.web")


class _CountRequests:
    """Counts requests by route template and status (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], path, str(status)).inc()


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(
        ("/api/", "/healthz", "/metrics")
    ) and "text/html" in request.headers.get("accept", "")


def create_app(
    settings: Settings,
    db: Database,
    *,
    engine: Engine | None = None,
    metrics: Metrics | None = None,
    hub: SignalHub | None = None,
) -> FastAPI:
    """The web app and API. With ``engine``, the app starts and stops it with its lifespan."""
    metrics = metrics or (engine.metrics if engine else Metrics())
    hub = hub or (engine.hub if engine else SignalHub())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            await engine.start()
        try:
            yield
        finally:
            if engine is not None:
                await engine.stop()

    app = FastAPI(
        title=f"{settings.web.title} API",
        version=__version__,
        description="Signals from signalmint automations. Lists are `{items, next_cursor}`, newest first.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = AppContext(settings=settings, db=db, hub=hub, metrics=metrics, engine=engine)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    register_filters(templates.env)
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {
                    "status": exc.status_code,
                    "message": exc.detail,
                    "site_title": settings.web.title,
                    "nav_active": "",
                },
                status_code=exc.status_code,
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        if _wants_html(request):
            return HTMLResponse(f"Bad request: {message}", status_code=422)
        return JSONResponse({"detail": message, "errors": problems}, status_code=422)

    return app
