"""``POST /api/v1/ingest/{automation}``: signed pushes reach the engine once, and only those.

The app and a real engine run in one uvicorn server (as ``signalmint run`` does with every
role), against a real database; the secret comes from the environment through the config file.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from signalmint.config import load_settings
from signalmint.engine.runner import Engine
from signalmint.registry import Registry
from signalmint.sources.push import PushSource, Refused, secret_key, sign, verify_signature
from signalmint.store import Database, list_signals
from signalmint.web.app import create_app
from tests.conftest import LiveServer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = """
database: {db}
automations:
  - name: sensors
    source:
      kind: push
      secret: ${{SENSORS_SECRET}}
      metrics: [temperature]
      texts: [room]
      queue: {queue}
      max_body: 2048
    detector: {{kind: threshold, column: temperature, level: 30}}
"""


def settings(db: Database, tmp_path: Path, registry: Registry, queue: int = 100) -> Any:
    path = tmp_path / "signalmint.yaml"
    path.write_text(CONFIG.format(db=db.url, queue=queue))
    return load_settings(path, registry=registry, env={"SENSORS_SECRET": SECRET})


def signed(body: bytes, *, msg_id: str | None = None, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(at if at is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret_key(secret), msg_id, stamp, body),
        "content-type": "application/json",
    }


def points(*values: float, key: str = "lab") -> bytes:
    """One point per value; several are a second apart from now on (each needs its own time)."""
    now = time.time()
    stamps = [now + i for i in range(len(values))]
    return json.dumps(
        {
            "points": [
                {"key": key, "metrics": {"temperature": v}, "texts": {"room": "B12"}}
                | ({"time": datetime.fromtimestamp(at, UTC).isoformat()} if len(values) > 1 else {})
                for v, at in zip(values, stamps, strict=True)
            ]
        }
    ).encode()


@pytest.fixture
def server(db: Database, tmp_path: Path, registry: Registry) -> Iterator[tuple[LiveServer, Engine]]:
    config = settings(db, tmp_path, registry)
    engine = Engine(config, db, registry)
    with LiveServer(create_app(config, db, engine=engine)) as live:
        deadline = time.monotonic() + 10
        while engine.source("sensors") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield live, engine


def post(live: LiveServer, body: bytes, headers: dict[str, str], name: str = "sensors") -> httpx.Response:
    return httpx.post(f"{live.url}/api/v1/ingest/{name}", content=body, headers=headers, timeout=10)


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_signed_points_reach_a_signal_through_the_engine(server: tuple[LiveServer, Engine], db: Database) -> None:
    live, _ = server
    first = post(live, points(20.0), signed(points(20.0)))
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "duplicate": False}
    body = points(25.0, 35.0)  # a second apart from now: both after the first point
    time.sleep(0.002)
    assert post(live, body, signed(body)).json()["accepted"] == 2
    wait_for(lambda: db.read_sync(list_signals, automation="sensors", limit=10))
    (signal,) = db.read_sync(list_signals, automation="sensors", limit=10)
    assert signal.key == "lab"
    assert signal.payload["value"] == 35.0 and signal.payload["previous"] == 25.0


def test_a_replayed_event_id_answers_202_and_adds_nothing(server: tuple[LiveServer, Engine]) -> None:
    live, engine = server
    body = points(21.0)
    headers = signed(body, msg_id="msg_once")
    assert post(live, body, headers).json() == {"accepted": 1, "duplicate": False}
    wait_for(lambda: engine.runners["sensors"].status.bars == 1)
    again = post(live, body, headers)
    assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicate": True}
    later = points(22.0)
    assert post(live, later, signed(later)).status_code == 202
    wait_for(lambda: engine.runners["sensors"].status.bars == 2)  # the replay added no row
    source = engine.source("sensors")
    assert isinstance(source, PushSource) and source.accepted == 2


def test_a_bad_signature_is_401(server: tuple[LiveServer, Engine]) -> None:
    live, engine = server
    body = points(50.0)
    wrong = post(live, body, signed(body, secret="whsec_" + "A" * 32))
    assert wrong.status_code == 401 and "does not match" in wrong.json()["detail"]
    tampered = signed(body)
    assert post(live, points(51.0), tampered).status_code == 401
    missing = post(live, body, {"content-type": "application/json"})
    assert missing.status_code == 401 and "webhook-id" in missing.json()["detail"]
    sensors = engine.source("sensors")
    assert sensors is not None and sensors.accepted == 0


def test_a_stale_or_future_timestamp_is_401(server: tuple[LiveServer, Engine]) -> None:
    live, _ = server
    body = points(20.0)
    for at in (time.time() - 360, time.time() + 360):  # a minute past the 5-minute tolerance: no timing race
        answer = post(live, body, signed(body, at=at))
        assert answer.status_code == 401 and "webhook-timestamp" in answer.json()["detail"]
    assert post(live, body, signed(body, at=time.time() - 240)).status_code == 202


def test_an_oversized_body_is_413(server: tuple[LiveServer, Engine]) -> None:
    live, _ = server
    body = points(*([20.0] * 60))
    assert len(body) > 2048
    answer = post(live, body, signed(body))
    assert answer.status_code == 413 and "2048" in answer.json()["detail"]


def test_a_body_that_does_not_validate_is_422_and_queues_nothing(server: tuple[LiveServer, Engine]) -> None:
    live, engine = server
    cases = {
        b'{"points": [{"key": "lab", "metrics": {"humidity": 3}}]}': "humidity",
        b'{"points": [{"key": "", "metrics": {"temperature": 3}}]}': "key",
        b'{"points": [{"key": "a", "time": "2026-12-06T10:00:00", "metrics": {}}]}': "zone",
        b'{"points": [{"key": "a", "metrics": {"temperature": "hot"}}]}': "number",
        b'{"points": [{"key": "a", "metrics": {"temperature": Infinity}}]}': "JSON",
        b'{"points": []}': "no points",
        b"not json": "JSON",
    }
    for body, words in cases.items():
        answer = post(live, body, signed(body))
        assert answer.status_code == 422, body
        assert words in answer.json()["detail"], (body, answer.json())
    sensors = engine.source("sensors")
    assert sensors is not None and sensors.accepted == 0


def test_an_unknown_automation_is_404(server: tuple[LiveServer, Engine]) -> None:
    live, _ = server
    body = points(1.0)
    assert post(live, body, signed(body), name="nope").status_code == 404


class Stalled:
    """An engine that has stopped taking frames from its source: the queue only fills up."""

    def __init__(self, source: PushSource) -> None:
        self.push = source

    def source(self, name: str) -> PushSource | None:
        return self.push if name == "sensors" else None


def test_a_flood_past_the_queue_is_429_with_retry_after(db: Database, tmp_path: Path, registry: Registry) -> None:
    config = settings(db, tmp_path, registry, queue=2)
    app = create_app(config, db)
    source = registry.build("source", "push", dict(config.automations[0].source.model_extra or {}))
    app.state.ctx.engine = Stalled(source)
    with LiveServer(app) as live:
        answers = []
        for i in range(4):
            body = points(float(i))
            answers.append(post(live, body, signed(body)))
    assert [a.status_code for a in answers] == [202, 202, 429, 429]
    assert answers[2].headers["Retry-After"] == "1"
    assert "behind" in answers[2].json()["detail"]
    # a refused request was not remembered: sent again once there is room, it is accepted
    body = points(9.0)
    headers = signed(body, msg_id="msg_retry")
    with LiveServer(app) as live:
        assert post(live, body, headers).status_code == 429
        source._queue.get_nowait()
        assert post(live, body, headers).json() == {"accepted": 1, "duplicate": False}


def test_without_the_engine_in_this_process_it_is_503(db: Database, tmp_path: Path, registry: Registry) -> None:
    config = settings(db, tmp_path, registry)
    with LiveServer(create_app(config, db)) as live:
        body = points(1.0)
        answer = post(live, body, signed(body))
    assert answer.status_code == 503 and "engine" in answer.json()["detail"]


def test_a_signature_from_the_reference_standard_webhooks_library_verifies() -> None:
    from standardwebhooks import Webhook

    body = points(20.0)
    at = datetime.fromtimestamp(int(time.time()), UTC)
    signature = Webhook(SECRET).sign("msg_ref", at, body.decode())
    headers = {"webhook-id": "msg_ref", "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}
    assert verify_signature(secret_key(SECRET), headers, body, time.time(), timedelta(minutes=5)) == "msg_ref"
    with pytest.raises(Refused):
        verify_signature(secret_key(SECRET), headers, body + b" ", time.time(), timedelta(minutes=5))
