"""The subscriber's dashboard page: plan and standing, live feed, watchlist, notifications, keys, where alerts go.

Drawn by the dashboard's routes (:mod:`.routes.dashboard`) and by its "Where alerts go" forms
(:mod:`.routes.dashboard_delivery`), which show it again with an error or a notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from ..billing.usage import month_of
from ..records import Plan, Signal
from ..registry import channel_kinds, in_display_order
from ..store import Connection, list_automations, list_signals
from ..store.accounts import get_preferences
from ..store.auth import list_api_keys
from ..store.health import open_stale_periods
from .auth import Viewer
from .context import AppContext
from .core.render import render
from .delivery_view import delivery_context
from .standing import standing
from .teaser import Veil, veil_for
from .visibility import scopes_for

__all__ = ["FEED_ROWS", "NOTIFY_CHANNELS", "dashboard_page", "feed"]

#: Channels that notify (the web feed and the API are pulled, not pushed): the installed
#: ``signalmint.channels`` plugins, read once, in display order.
NOTIFY_CHANNELS = in_display_order(channel_kinds())
FEED_ROWS = 20


def feed(
    conn: Connection, viewer: Viewer, now: datetime, veils: dict[int, Veil] | None = None, plans: Sequence[Plan] = ()
) -> list[Signal]:
    """The signals the subscriber sees now (masked); ``veils`` gets what hides each masked one."""
    names = [a.name for a in list_automations(conn, enabled_only=False)]
    out = []
    for signal in list_signals(conn, scopes=scopes_for(viewer, now, names), limit=FEED_ROWS):
        grant = viewer.grant(signal.automation)
        view = grant.view(signal, now) if grant is not None else None
        if view is not None:
            out.append(view)
            if veils is not None and grant is not None and signal.id is not None:
                veil = veil_for(signal, view, grant, plans)
                if veil is not None:
                    veils[signal.id] = veil
    return out


def dashboard_page(
    request: Request, ctx: AppContext, viewer: Viewer, *, status: int = 200, **extra: Any
) -> HTMLResponse:
    """The dashboard for ``viewer``; ``extra`` adds to what the template gets (errors, values, a flash)."""
    assert viewer.subscriber is not None
    subscriber, plan, now = viewer.subscriber, viewer.plan, datetime.now(UTC)

    veils: dict[int, Veil] = {}
    plans = ctx.access.current()

    def read(conn: Connection) -> dict[str, Any]:
        stale = {n: p for n, p in open_stale_periods(conn).items() if viewer.grant(n) is not None}
        return {
            "stale": stale,
            "titles": {a.name: a.display_title for a in ctx.settings.automations},
            "signals": feed(conn, viewer, now, veils, plans),
            "veils": veils,
            "preferences": get_preferences(conn, subscriber.id),
            "api_keys": list_api_keys(conn, subscriber.id),
        }

    data = ctx.db.read_sync(read)
    calls = ctx.meter.used(subscriber.id, month_of(now)) if ctx.meter is not None and plan and plan.api else None
    extra.setdefault("errors", {})
    extra.setdefault("values", {})
    return render(
        request,
        "dashboard.html",
        status=status,
        nav_active="dashboard",
        viewer=viewer,
        csrf=viewer.csrf(ctx.pepper),
        subscriber=subscriber,
        subscription=viewer.subscription,
        plan=plan,
        standing=standing(viewer.subscription, plan, subscriber, now),
        watchlist=sorted(viewer.watchlist),
        notify_channels=[c for c in NOTIFY_CHANNELS if plan is not None and c in plan.channels],
        api_calls=calls,
        api_offers=[p for p in ctx.access.current() if p.public and p.api],
        stream_url="/api/v1/stream",
        saved=request.query_params.get("saved", ""),
        **data,
        **delivery_context(ctx, viewer),
        **extra,
    )
