"""JSON shapes shared by the API, the live feed and every delivery channel (one definition)."""

from __future__ import annotations

from typing import Any

from .records import Signal

__all__ = ["signal_json"]


def signal_json(signal: Signal) -> dict[str, Any]:
    return {
        "id": signal.id,
        "automation": signal.automation,
        "seq": signal.seq,
        "key": signal.key,
        "time": signal.time.isoformat().replace("+00:00", "Z"),
        "kind": signal.kind,
        "score": signal.score,
        "payload": dict(signal.payload),
        "hash": signal.hash,
        "prev_hash": signal.prev_hash,
        "url": f"/signals/{signal.id}",
    }
