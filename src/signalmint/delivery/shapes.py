"""JSON shapes shared by the API, the live feed and every delivery channel (one definition)."""

from __future__ import annotations

from typing import Any

from ..records import Delivery, Signal

__all__ = ["delivery_json", "signal_json"]


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
        "scheme": signal.scheme,
        "prev_scheme": signal.prev_scheme,
        "commitment": signal.commitment or None,
        "salt": signal.salt or None,
        "url": f"/signals/{signal.id}",
        **({"late": True} if signal.late else {}),  # only when set, as in its hash (store/signals.py)
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """One outbox row, as the subscriber's delivery log and the admin's dead letters show it."""
    return {
        "id": delivery.id,
        "signal_id": delivery.signal_id,
        "subscriber_id": delivery.subscriber_id,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "not_before": delivery.not_before.isoformat(),
        "next_attempt_at": delivery.next_attempt_at.isoformat(),
        "last_error": delivery.last_error,
        "receipt": delivery.receipt,
        "idempotency_id": delivery.idempotency_id,
        "created_at": delivery.created_at.isoformat() if delivery.created_at else None,
    }
