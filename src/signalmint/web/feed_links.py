"""The address of a subscriber's private feed: a secret token per subscriber, rotated on request.

The feed's routes are :mod:`.routes.feeds`; the dashboard shows and rotates the same address.
"""

from __future__ import annotations

import hmac
import secrets as random_secrets
from typing import Any

from ..store.auth import get_or_create_setting, replace_setting
from .auth import Viewer
from .context import AppContext

__all__ = ["feed_nonce", "feed_token", "feed_urls"]


def feed_nonce(ctx: AppContext, subscriber_id: int, *, rotate: bool = False) -> str:
    name = f"feed_nonce:{subscriber_id}"
    if rotate:
        return str(ctx.db.write_sync(replace_setting, name, lambda: random_secrets.token_hex(8)))
    return str(ctx.db.write_sync(get_or_create_setting, name, lambda: random_secrets.token_hex(8)))


def feed_token(ctx: AppContext, subscriber_id: int, nonce: str) -> str:
    return hmac.new(ctx.pepper, f"feed:{subscriber_id}:{nonce}".encode(), "sha256").hexdigest()[:40]


def _feed_url(ctx: AppContext, subscriber_id: int, nonce: str) -> str:
    return f"{ctx.settings.base_url.rstrip('/')}/feeds/{subscriber_id}/{feed_token(ctx, subscriber_id, nonce)}.atom"


def feed_urls(ctx: AppContext, viewer: Viewer, *, rotate: bool = False) -> dict[str, Any]:
    """The viewer's feed as Atom (``url``) and RSS (``rss_url``); with ``rotate``, a new address."""
    assert viewer.subscriber is not None
    url = _feed_url(ctx, viewer.subscriber.id, feed_nonce(ctx, viewer.subscriber.id, rotate=rotate))
    return {"url": url, "rss_url": url.removesuffix(".atom") + ".rss"}
