"""Data points that external systems push to ``POST /api/v1/ingest/{automation}``.

The web route (:mod:`signalmint.web.routes.ingest`) verifies, validates and queues; this
source's stream yields what was queued, one frame per accepted request. What it decided:

- **Signature.** Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (Unix seconds)
  and ``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256 of
  "id.timestamp.body">``; any one matching is enough), keyed by the automation's
  ``secret`` (``whsec_`` + base64, from the environment). A timestamp further than
  ``tolerance`` from this server's clock, either way, is refused (401).
- **Body.** ``{"points": [{"key": "...", "time": "2026-12-06T10:00:00Z", "metrics":
  {...}, "texts": {...}}]}``: ``key`` a non-empty string; ``time`` optional, ISO 8601 with a
  zone (the time the request arrived when absent); ``metrics`` the declared metric columns
  (a number, or null for missing; one left out is missing too); ``texts`` the declared text
  columns (a string or null). A column the automation does not declare, a non-finite number
  or more than ``max_points`` points refuse the whole request (422, nothing queued), so a
  sender learns at once what is wrong. Row rules past that (a key's time going back, a
  duplicate time) are the usual row checks: counted in ``rejected``, never an error.
- **Once.** The ``webhook-id`` is remembered for ``retention``: a replay answers 202 and
  adds nothing. ``retention`` must cover ``tolerance`` (an older replay is refused for its
  timestamp anyway).
- **Backpressure.** Accepted points wait in a bounded in-memory queue of ``queue`` requests
  until the engine takes them; when it is full (the engine lags) the route answers 429 with
  ``Retry-After``. A 202 means queued in this process: points still queued when the engine
  stops are lost (the sender's id is remembered, so send such points with a new id).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import Duration
from ..records import ColumnKind, Frame, to_datetime64
from .validate import RowValidator

__all__ = ["PushOptions", "PushSource", "Refused", "parse_points", "secret_key", "verify_signature"]

SECRET_PREFIX = "whsec_"
MAX_ID = 255
MAX_KEY = 200
MAX_TEXT = 10_000


class Refused(Exception):
    """An ingest request refused: ``status`` and a message for the sender."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (base64 of 24 to 64 bytes)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the secret must hold 24 to 64 bytes, not {len(key)}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of a request (what a sender computes)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_signature(key: bytes, headers: Mapping[str, str], body: bytes, now: float, tolerance: timedelta) -> str:
    """The request's ``webhook-id`` if its headers sign ``body``; :class:`Refused` (401) if not."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not stamp or not signatures:
        raise Refused(401, "sign the request: webhook-id, webhook-timestamp and webhook-signature are required")
    if len(msg_id) > MAX_ID:
        raise Refused(401, f"webhook-id is longer than {MAX_ID} characters")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise Refused(401, "webhook-timestamp is not Unix seconds") from None
    if abs(now - timestamp) > tolerance.total_seconds():
        raise Refused(
            401, f"webhook-timestamp is more than {int(tolerance.total_seconds())} s from this server's clock"
        )
    expected = sign(key, msg_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split() if given.isascii()):
        raise Refused(401, "webhook-signature does not match the body (check the secret and sign id.timestamp.body)")
    return msg_id


class PushOptions(BaseModel):
    """Settings of the ``push`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str = Field(description="Signing secret whsec_... (from ${ENV}).")
    metrics: list[str] = Field(default_factory=list, description="Metric columns a point may carry.")
    texts: list[str] = Field(default_factory=list, description="Text columns a point may carry.")
    queue: int = Field(100, ge=1, le=100_000, description="Requests waiting for the engine before 429.")
    max_body: int = Field(65_536, ge=256, le=65_536, description="Largest body in bytes (413 above).")
    max_points: int = Field(1000, ge=1, le=10_000, description="Most points in one request.")
    tolerance: Duration = Field(timedelta(minutes=5), description="Accepted clock difference of webhook-timestamp.")
    retention: Duration = Field(timedelta(days=1), description="How long a webhook-id is remembered.")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        secret_key(value)
        return value

    @model_validator(mode="after")
    def _columns(self) -> Self:
        if not self.metrics and not self.texts:
            raise ValueError("declare at least one column (metrics or texts)")
        names = [*self.metrics, *self.texts]
        if len(set(names)) < len(names):
            raise ValueError("a column is named twice in metrics and texts")
        if self.retention < self.tolerance:
            raise ValueError("retention must be at least tolerance (replays are refused by timestamp after it)")
        return self


def _problem(where: str, what: str) -> Refused:
    return Refused(422, f"{where}: {what}")


def parse_points(body: bytes, metrics: Sequence[str], texts: Sequence[str], max_points: int, now: datetime) -> Frame:
    """The points of a request body as a frame; :class:`Refused` (422) naming the first problem."""

    def finite(value: float) -> bool:
        return math.isfinite(value)

    try:
        document = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise Refused(422, "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("points"), list):
        raise _problem("body", 'expected {"points": [...]}')
    extra = set(document) - {"points"}
    if extra:
        raise _problem("body", f"unknown fields {sorted(extra)}")
    points: list[Any] = document["points"]
    if not points:
        raise _problem("body.points", "no points")
    if len(points) > max_points:
        raise _problem("body.points", f"more than {max_points} points")
    default_ns = int(to_datetime64(now).astype(np.int64))
    keys: list[str] = []
    times: list[int] = []
    values: dict[str, list[float]] = {name: [] for name in metrics}
    strings: dict[str, list[str | None]] = {name: [] for name in texts}
    for i, point in enumerate(points):
        where = f"body.points.{i}"
        if not isinstance(point, dict):
            raise _problem(where, "a point is an object")
        unknown = set(point) - {"key", "time", "metrics", "texts"}
        if unknown:
            raise _problem(where, f"unknown fields {sorted(unknown)}")
        key = point.get("key")
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
            raise _problem(f"{where}.key", f"a non-empty string of at most {MAX_KEY} characters")
        keys.append(key)
        times.append(_time(point.get("time"), default_ns, f"{where}.time"))
        given = point.get("metrics", {})
        if not isinstance(given, dict):
            raise _problem(f"{where}.metrics", "an object of column -> number")
        for name in set(given) - set(metrics):
            raise _problem(f"{where}.metrics.{name}", f"not a metric column of this automation ({', '.join(metrics)})")
        for name in metrics:
            value = given.get(name)
            if value is None:
                values[name].append(math.nan)
            elif isinstance(value, int | float) and not isinstance(value, bool) and finite(float(value)):
                values[name].append(float(value))
            else:
                raise _problem(f"{where}.metrics.{name}", "a finite number or null")
        words = point.get("texts", {})
        if not isinstance(words, dict):
            raise _problem(f"{where}.texts", "an object of column -> string")
        for name in set(words) - set(texts):
            raise _problem(f"{where}.texts.{name}", f"not a text column of this automation ({', '.join(texts)})")
        for name in texts:
            text = words.get(name)
            if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
                raise _problem(f"{where}.texts.{name}", f"a string of at most {MAX_TEXT} characters, or null")
            strings[name].append(text)
    return Frame(
        keys=np.array(keys, dtype=str),
        times=np.array(times, dtype=np.int64).view("datetime64[ns]"),
        columns={name: np.array(v, dtype=np.float64) for name, v in values.items()},
        texts={name: np.array(v, dtype=object) for name, v in strings.items()},
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _time(value: Any, default_ns: int, where: str) -> int:
    if value is None:
        return default_ns
    if not isinstance(value, str):
        raise _problem(where, "an ISO 8601 time with a zone, e.g. 2026-12-06T10:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _problem(where, "an ISO 8601 time with a zone, e.g. 2026-12-06T10:00:00Z") from None
    if parsed.tzinfo is None:
        raise _problem(where, "the time has no zone (add Z or +00:00)")
    if not datetime(1970, 1, 2, tzinfo=UTC) <= parsed <= datetime(2200, 1, 1, tzinfo=UTC):
        raise _problem(where, "a time between 1970 and 2200")
    return int(to_datetime64(parsed).astype(np.int64))


class PushSource:
    """Frames pushed through the ingest route, from a bounded in-process queue."""

    kind: ClassVar[str] = "push"
    Options: ClassVar[type[PushOptions]] = PushOptions

    @classmethod
    def schema(cls, options: PushOptions) -> dict[str, ColumnKind]:
        return {**dict.fromkeys(options.metrics, "metric"), **dict.fromkeys(options.texts, "text")}

    def __init__(
        self,
        secret: str,
        metrics: Sequence[str] = (),
        texts: Sequence[str] = (),
        queue: int = 100,
        max_body: int = 65_536,
        max_points: int = 1000,
        tolerance: timedelta = timedelta(minutes=5),
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self.secret = secret
        self.key = secret_key(secret)
        self.metrics, self.texts = list(metrics), list(texts)
        self.queue, self.max_body, self.max_points = queue, max_body, max_points
        self.tolerance, self.retention = tolerance, retention
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=queue)
        self._rejected: Counter[str] = Counter()
        self.accepted = 0
        self.pruned_at = 0.0  # when the ingest route last forgot ids past ``retention``

    def __repr__(self) -> str:
        return f"PushSource(metrics={self.metrics!r}, texts={self.texts!r}, queue={self.queue})"

    @property
    def rejected(self) -> Mapping[str, int]:
        return MappingProxyType(self._rejected)

    @property
    def full(self) -> bool:
        """Whether the queue is full (the engine lags): the route answers 429."""
        return self._queue.full()

    def offer(self, frame: Frame) -> bool:
        """Queue a validated frame for the stream; False when the queue is full."""
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        self.accepted += len(frame)
        return True

    def parse(self, body: bytes, now: datetime) -> Frame:
        return parse_points(body, self.metrics, self.texts, self.max_points, now)

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """What was pushed, one frame per request, as the engine takes it (forever)."""
        schema: dict[str, ColumnKind] = {**dict.fromkeys(self.metrics, "metric"), **dict.fromkeys(self.texts, "text")}
        validator = RowValidator(self._rejected, source=self.kind, schema=schema)
        floor = int(to_datetime64(since).astype(np.int64)) if since is not None else None
        try:
            while True:
                frame = await self._queue.get()
                if floor is not None:
                    keep = np.asarray(frame.times.view(np.int64) > floor)
                    if not keep.all():
                        self._rejected["late"] += int((~keep).sum())
                        frame = frame.take(keep)
                frame = validator.check(frame)
                if len(frame):
                    yield frame
        finally:
            validator.flush()
