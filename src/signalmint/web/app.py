"""``create_app(settings, db)``: the ASGI application, built from what it is given."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import BytecodeCache, Environment, FileSystemLoader, select_autoescape
from jinja2.bccache import Bucket
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..accounts.mail import Mailer, mailer_for
from ..accounts.service import Accounts, server_pepper
from ..billing.providers import make_provider
from ..billing.service import Billing
from ..billing.usage import UsageMeter
from ..config import Settings, demo_exposure
from ..demo.mailcatcher import MailCatcher
from ..engine.hub import SignalHub
from ..engine.metrics import Metrics
from ..errors import AccessError, ConfigError, LimitError
from ..store import Database, is_sqlite
from ..store.plans import sync_plans
from .auth import AccessBook
from .context import AppContext, Pipeline
from .filters import register_filters
from .inspector import Inspector
from .listener import Listener
from .money import register_money_filters
from .openapi import allowed_methods
from .openapi import install as install_openapi
from .routes import (
    account,
    admin,
    admin_api,
    admin_revenue,
    api,
    api_outcomes,
    billing,
    chain,
    dashboard,
    dashboard_delivery,
    demo,
    email_events,
    endpoints,
    feeds,
    ingest,
    me,
    ops,
    pages,
    reports,
    status,
    stripe_webhook,
    telegram,
    track_record,
    unsubscribe,
)
from .security import SecurityGuard
from .shared_limits import make_limiter

ROUTES = [
    api,
    api_outcomes,
    chain,
    me,
    endpoints,
    unsubscribe,
    feeds,
    email_events,
    telegram,
    admin_api,
    admin_revenue,
    ops,
    status,
    pages,
    track_record,
    reports,
    account,
    dashboard,
    dashboard_delivery,
    admin,
    billing,
    stripe_webhook,
    ingest,
    demo,
]

__all__ = ["create_app"]

HERE = Path(__file__).parent
log = logging.getLogger("signalmint.web")


class _LabelledRoute(Route):
    """A plain Starlette route that, like FastAPI's, leaves itself in the scope (for /metrics labels)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


class _Edge:
    """The app's one ASGI middleware: refuses bodies over ``max_bytes`` (413, OWASP API4), adds the
    API's rate-limit headers to every answer, and counts requests by route and status.

    ``fast`` maps a path to a GET route this middleware calls itself (``GET /api/v1/signals``, the
    busiest): the same endpoint and exception handlers as through the router, without FastAPI's
    per-request layers in between (exception middleware, exit stack, routing)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_bytes: int, fast: dict[str, Route] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.fast = fast or {}
        self._counters: dict[tuple[str, str, int], Any] = {}  # the counter of each label set, found once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Stripe's events (an invoice with many lines) can outgrow what people post; they are
        # signed, and the signature is checked before anything is parsed.
        limit = MAX_PROVIDER_BODY if scope["path"] == "/billing/stripe/webhook" else self.max_bytes
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                response = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
                await response(scope, receive, send)
                return
        status = 500
        state = scope.setdefault("state", {})
        seen = 0

        async def receiving() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                limits = state.get("limit_headers")
                if limits:
                    message["headers"] = [*message.get("headers", []), *_limit_headers(limits)]
            await send(message)

        fast = self.fast.get(scope["path"]) if scope["method"] == "GET" else None
        try:
            if fast is not None:
                await _serve(fast, scope, receiving, sending)
            else:
                await self.app(scope, receiving, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            labels = (scope["method"], path, status)
            counter = self._counters.get(labels)
            if counter is None:
                counter = self.metrics.http_requests.labels(scope["method"], path, str(status))
                if len(self._counters) < 10_000:
                    self._counters[labels] = counter
            counter.inc()


_NAMES: dict[str, bytes] = {}  # header name -> its lower-case bytes


def _limit_headers(limits: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """The rate-limit headers as ASGI pairs (``Retry-After`` stays with the 429s that set it themselves)."""
    pairs = []
    for name, value in limits.items():
        if name != "Retry-After":
            raw = _NAMES.get(name)
            if raw is None:
                raw = _NAMES[name] = name.lower().encode()
            pairs.append((raw, value.encode()))
    return pairs


async def _serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
    """One request to ``route``'s endpoint (it takes the request), its errors answered by the app's handlers."""
    scope["route"] = route
    scope["endpoint"] = route.endpoint
    scope["path_params"] = {}
    request = Request(scope, receive, send)
    try:
        response = await route.endpoint(request)
    except Exception as exc:
        handler = _handler_for(scope["app"].exception_handlers, exc)
        if handler is None:
            raise
        response = await handler(request, exc)
    await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's handler of ``exc``, as Starlette's exception middleware finds it (status code, then class)."""
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/healthz", "/metrics")) and "text/html" in request.headers.get(
        "accept", ""
    )


class _CompiledTemplates(BytecodeCache):
    """Templates compiled once per process, whatever number of apps render them (tests make one
    per test; each new app compiled every page it showed again). Jinja keys an entry by the
    template's name and checks the source's hash, so an edited template compiles afresh."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()


def create_app(
    settings: Settings,
    db: Database,
    *,
    engine: Pipeline | None = None,
    metrics: Metrics | None = None,
    hub: SignalHub | None = None,
    mailer: Mailer | None = None,
    catcher: MailCatcher | None = None,
) -> FastAPI:
    """The web app and API. With ``engine``, the app starts and stops it with its lifespan.

    ``catcher`` (demo mode) is the demo's mail catcher, shown at ``/demo/mail``.

    Plans from ``settings`` are synced to the store here (a changed plan gets a new version).
    """
    exposure = demo_exposure(settings)
    if exposure:
        raise ConfigError(exposure, key="demo", hint="set `demo: false` to serve others")
    metrics = metrics or (engine.metrics if engine else Metrics())
    hub = hub or (engine.hub if engine else SignalHub())
    hub.poll = settings.web.stream_poll_seconds
    shared = not is_sqlite(db.engine)  # PostgreSQL: other web replicas may share this store
    mailer = mailer or mailer_for(settings.email)
    pepper = server_pepper(settings, db)
    if settings.plans:
        db.write_sync(sync_plans, settings.current_plans(), datetime.now(UTC))
    ctx = AppContext(
        settings=settings,
        db=db,
        hub=hub,
        metrics=metrics,
        engine=engine,
        mailer=mailer,
        pepper=pepper,
        accounts=Accounts(settings, db, mailer, pepper),
        access=db.read_sync(AccessBook.load, [a.name for a in settings.automations]),
        meter=UsageMeter(db, meter_event=settings.billing.stripe.meter_event, shared=shared),
        limiter=make_limiter(settings, db),
        catcher=catcher if settings.demo else None,
        inspector=Inspector() if settings.demo else None,
    )
    ctx.billing = billing = Billing(
        settings,
        db,
        make_provider(settings, db),
        mailer,
        current_plans=lambda: ctx.access.current(),
        evict=ctx.viewers.forget_subscriber,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything alive after start-up (modules, numpy, the app) moves out of the collector's
        # sight: full collections stay short instead of pausing every request for ~150 ms.
        gc.collect()
        gc.freeze()
        housekeeping = asyncio.create_task(ctx.housekeeping())
        billing_loop = asyncio.create_task(billing.run())
        tasks = [housekeeping, billing_loop]
        await ctx.limiter.astart()
        if shared:  # one LISTEN connection: live streams and cache invalidation across replicas
            listener = Listener(db, hub, ctx.cache_message)
            ctx.viewers.announce = listener.announce
            tasks.append(asyncio.create_task(listener.run(), name="listener"))
            listener.announce("plans")  # this replica may have made new plan versions: the others reload
            app.state.listener = listener
        if engine is not None:
            await engine.start()
        try:
            yield
        finally:
            if engine is not None:
                await engine.stop()
            ctx.viewers.announce = None
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ctx.limiter.aclose()

    app = FastAPI(
        title=f"{settings.web.title} API",
        version=__version__,
        description=(
            "Signals from signalmint automations. Lists are `{items, next_cursor}`, newest first. "
            "Send `Authorization: Bearer <key>` to see what your plan entitles you to; without a key "
            "you get the public view (delayed, masked as the free plan is)."
        ),
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks for the global providers on every request: only when asked for.
        telemetry=None if settings.web.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # /docs is routes/status.py's: Swagger UI from the package's own files
        redoc_url=None,
    )
    app.state.ctx = ctx
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(), bytecode_cache=_COMPILED
    )
    templates = Jinja2Templates(env=env)
    register_filters(templates.env)
    register_money_filters(templates.env)
    templates.env.globals["demo_tools"] = settings.demo  # the demo's request inspector
    templates.env.globals["demo_mail"] = ctx.catcher is not None  # the demo's mail catcher, /demo/mail
    templates.env.globals["report_automations"] = {a.name for a in settings.automations if a.reports}
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in ROUTES:
        app.include_router(module.router)
    # The busiest route also goes in front as a plain Starlette route: the same function (it takes
    # only the request, validates its query and calls api_viewer itself), without FastAPI's
    # per-request dependency machinery. The FastAPI route above stays for the OpenAPI docs.
    fast = _LabelledRoute("/api/v1/signals", api.signals, methods=["GET"], name="signals_fast")
    app.router.routes.insert(0, fast)
    app.add_middleware(_Edge, metrics=metrics, max_bytes=MAX_BODY, fast={fast.path: fast})
    install_openapi(app)
    # Outermost, so every answer (a 413 included) carries the security headers.
    app.add_middleware(SecurityGuard, settings=settings, pepper=pepper, max_bytes=MAX_BODY)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"status": exc.status_code, "message": exc.detail, "site_title": settings.web.title, "nav_active": ""},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # name every method of the path, not only the first route's
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        detail = (
            exc.detail if exc.status_code != 405 else f"{request.method} is not allowed here; use {headers['Allow']}"
        )
        return await http_error(request, HTTPException(exc.status_code, detail, headers=headers))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        if _wants_html(request):
            return HTMLResponse(f"Bad request: {message}", status_code=422)
        return JSONResponse({"detail": message, "errors": problems}, status_code=422)

    @app.exception_handler(AccessError)
    async def access_error(request: Request, exc: AccessError) -> Response:
        return await http_error(request, HTTPException(400, str(exc)))

    @app.exception_handler(LimitError)
    async def limit_error(request: Request, exc: LimitError) -> Response:
        return await http_error(request, HTTPException(422, str(exc)))

    return app


MAX_BODY = 64 * 1024
MAX_PROVIDER_BODY = 1024 * 1024
