"""The User-Agent a source sends, in a module of its own: the engine fills it in for every
source without importing the fetcher (aiohttp) that only the network sources use."""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["default_user_agent"]


def default_user_agent(base_url: str | None = None) -> str:
    """``signalmint/<version>``, with the operator's site when known.

    >>> default_user_agent("https://alerts.example.com")[:10], default_user_agent("https://a.example")[-20:]
    ('signalmint', '(+https://a.example)')
    """
    name = f"signalmint/{version('signalmint')}"
    return f"{name} (+{base_url})" if base_url else name
