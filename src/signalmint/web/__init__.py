"""The web app: public pages with live feeds and charts, the JSON API, and operations endpoints."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
