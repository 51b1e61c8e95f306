"""What every route needs, gathered in one object on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from ..config import Settings
from ..hub import SignalHub
from ..metrics import Metrics
from ..store import Database

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["AppContext", "Viewer", "get_ctx", "get_viewer"]


@dataclass
class AppContext:
    settings: Settings
    db: Database
    hub: SignalHub
    metrics: Metrics
    engine: Engine | None = None


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking. Today everyone is the public; plans and API keys will fill this in.

    Every API route depends on :func:`get_viewer`, so authentication and
    entitlement filtering slot in here without changing any route's shape.
    """

    kind: str = "public"


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_viewer(request: Request) -> Viewer:
    return Viewer()
