"""The demo's request inspector: what webhooks sent to ``/demo/inspect/{token}``, and whether they verify.

In demo mode a subscriber can send webhooks to the demo itself (the one loopback address
the SSRF guard lets through, see :mod:`signalmint.delivery.inspect`). Each request is kept
in memory (at most ``boxes`` tokens, ``per_box`` requests each, newest first) with its
headers and body, and checked the Standard Webhooks way against the secrets of the endpoint
registered for that URL: the ``v1`` HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}``,
and a timestamp within five minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Inspected", "Inspector", "verify_signature"]

TOLERANCE = 5 * 60


@dataclass(frozen=True, slots=True)
class Inspected:
    """One request the inspector received."""

    at: datetime
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    valid: bool
    verdict: str  # in words: "Signature verified with the endpoint's secret." or why not

    @property
    def text(self) -> str:
        """The body as text; JSON indented for reading (the signature is over the bytes as sent)."""
        text = self.body.decode("utf-8", "replace")
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return text


def _key(secret: str) -> bytes | None:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_signature(
    headers: Mapping[str, str], body: bytes, endpoint_secrets: Sequence[str], now: float | None = None
) -> tuple[bool, str]:
    """Does the request carry a valid Standard Webhooks signature by one of ``endpoint_secrets``?

    >>> from signalmint.delivery.channels.webhook import sign
    >>> key = b"k" * 32
    >>> secret = "whsec_" + base64.b64encode(key).decode()
    >>> good = {"webhook-id": "m1", "webhook-timestamp": "1000", "webhook-signature": sign("m1", 1000, b"{}", [key])}
    >>> verify_signature(good, b"{}", [secret], now=1010)
    (True, "Signature verified with the endpoint's secret.")
    >>> verify_signature(good, b"{ }", [secret], now=1010)[1]
    'Signature does not match: the body or the headers were changed, or another secret signed it.'
    """
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and stamp and given):
        return False, "Not signed: webhook-id, webhook-timestamp or webhook-signature is missing."
    if not stamp.isdigit():
        return False, "The webhook-timestamp is not a number of seconds."
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE:
        return False, "The webhook-timestamp is more than five minutes away from now (a replay?)."
    if not endpoint_secrets:
        return False, "No endpoint is registered for this address, so there is no secret to check with."
    signed = f"{msg_id}.{stamp}.".encode() + body
    offered = [s.partition(",")[2] for s in given.split() if s.startswith("v1,")]
    for secret in endpoint_secrets:
        key = _key(secret)
        if key is None:
            continue
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, sig) for sig in offered):
            return True, "Signature verified with the endpoint's secret."
    return False, "Signature does not match: the body or the headers were changed, or another secret signed it."


class Inspector:
    """Requests received per token, bounded (see the module docstring)."""

    def __init__(self, *, boxes: int = 200, per_box: int = 50) -> None:
        self.boxes = boxes
        self.per_box = per_box
        self._boxes: OrderedDict[str, deque[Inspected]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(16)

    def record(self, token: str, request: Inspected) -> None:
        with self._lock:
            box = self._boxes.pop(token, None) or deque(maxlen=self.per_box)
            box.appendleft(request)
            self._boxes[token] = box
            while len(self._boxes) > self.boxes:
                self._boxes.popitem(last=False)

    def requests(self, token: str) -> list[Inspected]:
        """What arrived for ``token``, newest first."""
        with self._lock:
            return list(self._boxes.get(token, ()))


def inspected(method: str, headers: Sequence[tuple[str, str]], body: bytes, valid: bool, verdict: str) -> Inspected:
    return Inspected(datetime.now(UTC), method, tuple(headers), body, valid, verdict)
