"""A subscriber's private feed: its address over the API, and the feed itself as Atom or RSS 2.0.

The address carries a secret token (:mod:`signalmint.web.feed_links`): anyone holding it reads
the subscriber's signals exactly as their plan shows them (delay, keys, masks), with no
cookie or key. Rotating the address stops the old one at once.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from ...store import get_signal, list_automations, list_signals
from ...store.auth import get_setting
from ...store.series import CHART_FIELDS, signal_series
from .. import charts
from ..auth import subscriber_viewer
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES
from ..core.deps import ApiMe as Me
from ..core.forms import throttle
from ..feed_links import feed_token, feed_urls
from ..feeds import atom, chart_context, entries, rss
from ..params import Id
from ..visibility import scopes_for

__all__ = ["router"]

router = APIRouter(tags=["me"])
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


@router.get("/api/v1/me/feed", responses=RESPONSES)
def feed_url(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Your private Atom feed's address, and the same feed as RSS 2.0 (keep them secret; rotate if one leaks)."""
    return feed_urls(ctx, viewer)


@router.post("/api/v1/me/feed/rotate", responses=RESPONSES)
def rotate_feed(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """A new feed address; the old one stops working at once."""
    return feed_urls(ctx, viewer, rotate=True)


def _feed_viewer(request: Request, ctx: AppContext, subscriber_id: int, token: str) -> Any:
    """The subscriber behind a private feed address (404 for a wrong or rotated token)."""
    # Reading only: a feed's nonce exists once its owner asked for the address; a made-up
    # subscriber id or token writes nothing, and wrong guesses from one address are throttled.
    nonce = ctx.db.read_sync(get_setting, f"feed_nonce:{subscriber_id}")
    if nonce is None or len(token) > 64 or not hmac.compare_digest(feed_token(ctx, subscriber_id, nonce), token):
        throttle(request, ctx, "feed")
        raise HTTPException(404, "no such feed")
    viewer = subscriber_viewer(ctx, subscriber_id)
    if viewer.plan is None or "rss" not in viewer.plan.channels:
        raise HTTPException(403, "your plan does not include the feed")
    return viewer


def _feed(request: Request, subscriber_id: int, token: str, ctx: AppContext, kind: str) -> Response:
    viewer = _feed_viewer(request, ctx, subscriber_id, token)
    now = datetime.now(UTC)
    rows = ctx.db.read_sync(list_signals, scopes=scopes_for(viewer, now, ctx.automation_names()), limit=50)
    base = ctx.settings.base_url.rstrip("/")
    address = f"{base}/feeds/{subscriber_id}/{token}"
    items = entries(rows, viewer, now, ctx.access.current(), base, f"{address}/signals")
    title = f"{ctx.settings.web.title} signals"
    headers = {"Cache-Control": "private, max-age=30"}
    if kind == "rss":
        xml = rss(items, title=title, self_url=f"{address}.rss", site=base, now=now)
        return Response(xml, media_type="application/rss+xml", headers=headers)
    xml = atom(
        items, title=title, feed_id=f"{base}/feeds/{subscriber_id}", self_url=f"{address}.atom", site=base, now=now
    )
    return Response(xml, media_type="application/atom+xml", headers=headers)


@router.get("/feeds/{subscriber_id}/{token}.atom", include_in_schema=False)
def atom_feed(subscriber_id: Id, token: str, request: Request, ctx: Ctx) -> Response:
    """The subscriber's signals as Atom, exactly as their plan shows them (delay, keys, masks)."""
    return _feed(request, subscriber_id, token, ctx, "atom")


@router.get("/feeds/{subscriber_id}/{token}.rss", include_in_schema=False)
def rss_feed(subscriber_id: Id, token: str, request: Request, ctx: Ctx) -> Response:
    """The same feed as RSS 2.0."""
    return _feed(request, subscriber_id, token, ctx, "rss")


@router.get("/feeds/{subscriber_id}/{token}/signals/{signal_id}/chart.svg", include_in_schema=False)
def feed_chart(subscriber_id: Id, token: str, signal_id: Id, request: Request, ctx: Ctx) -> Response:
    """A signal's volume chart for the feed's entries: only when the subscriber's plan shows it now."""
    viewer = _feed_viewer(request, ctx, subscriber_id, token)
    now = datetime.now(UTC)
    stored = ctx.db.read_sync(get_signal, signal_id)
    grant = viewer.grant(stored.automation) if stored is not None else None
    hidden = grant.hidden_at(stored, now) if grant is not None and stored is not None else None
    if stored is None or hidden is None or hidden & CHART_FIELDS:
        raise HTTPException(404, "no such chart, or not on your plan yet")
    options = next((a.detector_options for a in ctx.db.read_sync(list_automations, enabled_only=False)
                    if a.name == stored.automation), {})  # fmt: skip
    window, ratio = chart_context(options)
    series = ctx.db.read_sync(signal_series, stored, window)
    if series.highlight is None:
        raise HTTPException(404, "the bars behind this signal were removed by the retention setting")
    svg = charts.volume_chart(series.times, series.volume, series.baseline, series.highlight, ratio_line=ratio)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})
