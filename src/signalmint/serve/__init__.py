"""Running signalmint: the processes (web, engine, worker) and the wiring between the stages that
must not import each other (the engine's on-commit fan-out, the watchdog's operator alerts).
"""

from __future__ import annotations

from .process import ROLES, run_process, serve, web_config
from .wiring import wire_engine

__all__ = ["ROLES", "run_process", "serve", "web_config", "wire_engine"]
