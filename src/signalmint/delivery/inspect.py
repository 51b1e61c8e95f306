"""The demo's request inspector, as delivery sees it: the one loopback address a demo may send to.

In demo mode (``settings.demo``) webhooks may go to ``{base_url}/demo/inspect/{token}``, the
demo app's own receiver (:mod:`signalmint.web.inspector` keeps what arrives and shows it).
Nothing else on loopback or a private network becomes reachable: the SSRF guard lets only
that exact prefix and a plain token through (see :func:`signalmint.net.ssrf.check_url`),
and outside demo mode there is no prefix at all.
"""

from __future__ import annotations

from ..config import Settings

__all__ = ["INSPECT_PATH", "inspector_prefix"]

INSPECT_PATH = "/demo/inspect/"


def inspector_prefix(settings: Settings) -> str | None:
    """``http://HOST:PORT/demo/inspect/`` in demo mode, else None.

    >>> from signalmint.config import Settings
    >>> inspector_prefix(Settings(demo=True, base_url="http://127.0.0.1:8000/"))
    'http://127.0.0.1:8000/demo/inspect/'
    >>> inspector_prefix(Settings(base_url="http://127.0.0.1:8000")) is None
    True
    """
    if not settings.demo:
        return None
    return settings.base_url.rstrip("/") + INSPECT_PATH
