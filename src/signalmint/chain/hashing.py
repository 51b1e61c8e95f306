"""The hash chain of a signal log, as anyone can check it: hash schemes, chain records, verification.

Every signal of an automation carries ``seq`` (1, 2, 3...), ``prev_hash`` (the hash of the
signal before it, ``""`` for the first) and ``hash``. Two schemes:

- **scheme 1** (signals stored before migration 0008): ``hash = H(automation, seq, key, time,
  kind, score, payload, prev_hash)``. The numbers go into the hash directly, and they are
  low-entropy (an integer volume, a ratio to two decimals): trying each plausible value against
  the hash would confirm a hidden one. So a scheme-1 hash is published only with its numbers.
- **scheme 2**: a random 128-bit ``salt`` per signal, ``commitment = H(salt, score, payload)``
  and ``hash = H(2, automation, seq, key, time, kind, commitment, prev_hash)``. The hash and the
  commitment are published at once; the salt and the numbers when they are revealed, and then
  anyone can check them against the commitment fixed when the signal fired. Without the salt,
  the commitment says nothing about the numbers.

One bridge: the first scheme-2 signal after scheme-1 ones has a scheme-1 ``prev_hash``, shown
only with its own numbers (it would confirm the previous signal's hidden ones).

A *chain record* (:func:`chain_record`) is one signal as a JSON object, as
``GET /api/v1/chain`` serves it one per line (``{"seq", "pending": true}`` for one still in its
delay); :func:`verify_records` checks a sequence of them
and names the first broken link. ``H`` is SHA-256 over canonical JSON (sorted keys, no spaces).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..records import Signal

__all__ = [
    "ChainReport",
    "chain_record",
    "commitment",
    "hash_v1",
    "hash_v2",
    "new_salt",
    "verify_records",
]


def _h(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def new_salt() -> str:
    """A fresh 128-bit salt, as hex."""
    return secrets.token_hex(16)


def commitment(salt: str, score: float, payload: Mapping[str, Any]) -> str:
    """``H(salt, score, payload)``: binds the numbers without showing them.

    >>> commitment("00" * 16, 7.5, {"volume": 1200.0}) == commitment("00" * 16, 7.5, {"volume": 1201.0})
    False
    """
    return _h({"salt": salt, "score": float(score).hex(), "payload": dict(payload)})


def _late(body: dict[str, Any], late: bool) -> dict[str, Any]:
    """A late signal's hash also covers ``"late": true``, so a backfilled signal cannot later pass
    for a real-time call (nor a real-time one be marked late); on-time signals leave the key out,
    so chains stored before the flag existed verify unchanged."""
    if late:
        body["late"] = True
    return body


def hash_v1(
    automation: str,
    seq: int,
    key: str,
    time: str,
    kind: str,
    score: float,
    payload: Mapping[str, Any],
    prev: str,
    late: bool = False,
) -> str:
    """Scheme 1: the numbers themselves go into the hash (``time`` as ``datetime.isoformat()``)."""
    body = {
        "automation": automation,
        "seq": seq,
        "key": key,
        "time": time,
        "kind": kind,
        "score": float(score).hex(),
        "payload": dict(payload),
        "prev_hash": prev,
    }
    return _h(_late(body, late))


def hash_v2(
    automation: str, seq: int, key: str, time: str, kind: str, commitment_: str, prev: str, late: bool = False
) -> str:
    """Scheme 2: the public fields, the commitment to the numbers, and the previous hash."""
    body = {
        "v": 2,
        "automation": automation,
        "seq": seq,
        "key": key,
        "time": time,
        "kind": kind,
        "commitment": commitment_,
        "prev_hash": prev,
    }
    return _h(_late(body, late))


def chain_record(signal: Signal, revealed: bool) -> dict[str, Any]:
    """``signal`` as one line of a published chain; the numbers (and salt) only when ``revealed``.

    A scheme-1 signal shows its hash only when revealed; a scheme-2 one always shows its hash
    and commitment, and its ``prev_hash`` unless that is a hidden scheme-1 hash (the bridge).
    """
    v2 = signal.scheme >= 2
    show_prev = revealed or (v2 and signal.prev_scheme != 1)
    return {
        "seq": signal.seq,
        "scheme": signal.scheme,
        "automation": signal.automation,
        "key": signal.key,
        "time": signal.time.isoformat(),
        "kind": signal.kind,
        "late": signal.late,
        "prev_hash": signal.prev_hash if show_prev else None,
        "hash": signal.hash if (v2 or revealed) else None,
        "commitment": signal.commitment if v2 else None,
        "revealed": revealed,
        "score": float(signal.score) if revealed else None,
        "payload": dict(signal.payload) if revealed else None,
        "salt": signal.salt if (v2 and revealed) else None,
        "id": signal.id,
    }


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of checking one automation's chain.

    ``checked`` links verified; ``unverified`` signals whose link cannot be checked yet (a
    scheme-1 hash hidden with its numbers); ``opened`` revealed payloads checked against their
    commitments; ``bad_seq`` the first broken signal and ``reason`` why.
    """

    automation: str
    checked: int
    ok: bool
    bad_seq: int | None = None
    reason: str = ""
    unverified: int = 0
    opened: int = 0


def verify_records(automation: str, records: Iterable[Mapping[str, Any]]) -> ChainReport:
    """Check chain records (oldest first, from seq 1) and stop at the first broken link.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 1, 2, tzinfo=UTC).isoformat()
    >>> c = commitment("ab" * 16, 7.5, {"volume": 1.0})
    >>> first = {"seq": 1, "scheme": 2, "key": "K", "time": t, "kind": "spike", "prev_hash": "",
    ...          "commitment": c, "hash": hash_v2("a", 1, "K", t, "spike", c, ""), "revealed": False}
    >>> verify_records("a", [first]).ok
    True
    >>> verify_records("a", [{**first, "key": "L"}]).reason
    'its contents do not match its hash (edited)'
    """
    expected = 1
    known_prev: str | None = ""  # None: unknown (after a hidden scheme-1 hash)
    checked = unverified = opened = 0

    def broken(seq: int, reason: str) -> ChainReport:
        return ChainReport(automation, checked, False, seq, reason, unverified, opened)

    for r in records:
        seq = r.get("seq")
        if seq != expected:
            return broken(expected, f"signal #{expected} is missing")
        given_prev = r.get("prev_hash")
        if known_prev is not None and given_prev is not None and given_prev != known_prev:
            return broken(seq, "its prev_hash does not match the signal before")
        link_prev = given_prev if given_prev is not None else known_prev
        if r.get("pending"):  # still in its delay: its link is checked once it is published
            unverified += 1
            known_prev = None
            expected += 1
            continue
        try:
            scheme = int(r.get("scheme") or 1)
            common = (automation, seq, str(r["key"]), str(r["time"]), str(r["kind"]))
            revealed = bool(r.get("revealed"))
            late = bool(r.get("late"))
            if scheme >= 2:
                if revealed and commitment(str(r["salt"]), float(r["score"]), r["payload"]) != r["commitment"]:
                    return broken(seq, "its revealed numbers do not match its commitment (edited)")
                opened += revealed
                if link_prev is None:
                    unverified += 1
                elif hash_v2(*common, str(r["commitment"]), link_prev, late) != r["hash"]:
                    return broken(seq, "its contents do not match its hash (edited)")
                else:
                    checked += 1
                known_prev = r["hash"]
            elif r.get("hash") is None or not revealed or link_prev is None:
                unverified += 1
                known_prev = r.get("hash")
            else:
                if hash_v1(*common, float(r["score"]), r["payload"], link_prev, late) != r["hash"]:
                    return broken(seq, "its contents do not match its hash (edited)")
                checked += 1
                known_prev = r["hash"]
        except (KeyError, TypeError, ValueError) as exc:
            return broken(seq, f"the record is malformed ({exc.__class__.__name__}: {exc})")
        expected += 1
    return ChainReport(automation, checked, True, None, "", unverified, opened)
