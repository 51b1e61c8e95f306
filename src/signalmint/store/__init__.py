"""Storage: tables, migrations and the functions that map rows to records.

Only this package knows about rows; everything else speaks in records.
"""

from __future__ import annotations

from .database import Connection, Database, DatabaseError, is_sqlite
from .signals import (
    ChainReport,
    append_signals,
    get_signal,
    list_signals,
    signals_after,
    verify_chain,
)
from .state import Checkpoint, list_automations, load_checkpoint, save_checkpoint, sync_automations

__all__ = [
    "ChainReport",
    "Checkpoint",
    "Connection",
    "Database",
    "DatabaseError",
    "append_signals",
    "get_signal",
    "is_sqlite",
    "list_automations",
    "list_signals",
    "load_checkpoint",
    "save_checkpoint",
    "signals_after",
    "sync_automations",
    "verify_chain",
]
