from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from signalmint.config import Settings
from signalmint.records import Automation, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.web.app import create_app
from tests.conftest import LiveServer, stored_id

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def seed(db: Database, n: int = 7) -> list[Signal]:
    automations = [
        Automation("alpha", "Alpha", "first", "synthetic", "volume_spike", {"window": 30, "ratio": 3.0, "z": 4.0}),
        Automation("beta", "Beta", "second", "file", "volume_spike", {}),
    ]
    db.write_sync(sync_automations, automations, datetime.now(UTC))
    stored: list[Signal] = []
    for i in range(n):
        automation = "alpha" if i % 3 else "beta"
        signal = Signal(
            automation=automation,
            key=f"K{i % 4}",
            time=T0 + timedelta(minutes=i),
            kind="volume_spike",
            score=4.0 + i,
            payload={"volume": 5000.0 + i, "baseline": 1000.0, "ratio": 5.0, "z": 4.0 + i},
        )
        stored += db.write_sync(append_signals, automation, [signal], datetime.now(UTC))
    return stored


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    app = create_app(Settings(database=db.url), db)
    with TestClient(app) as c:
        yield c


def test_automations(client: TestClient, db: Database) -> None:
    seed(db)
    body = client.get("/api/v1/automations").json()
    assert body["next_cursor"] is None
    assert [a["name"] for a in body["items"]] == ["alpha", "beta"]
    assert body["items"][0]["url"] == "/automations/alpha"


def test_signals_newest_first_with_filters(client: TestClient, db: Database) -> None:
    stored = seed(db)
    items = client.get("/api/v1/signals").json()["items"]
    assert [s["id"] for s in items] == [s.id for s in reversed(stored)]
    alpha = client.get("/api/v1/signals", params={"automation": "alpha"}).json()["items"]
    assert {s["automation"] for s in alpha} == {"alpha"}
    assert len(alpha) == sum(1 for s in stored if s.automation == "alpha")
    k1 = client.get("/api/v1/signals", params={"key": "K1"}).json()["items"]
    assert {s["key"] for s in k1} == {"K1"} and len(k1) == 2
    since = client.get("/api/v1/signals", params={"since": (T0 + timedelta(minutes=5)).isoformat()}).json()["items"]
    assert [s["time"] for s in since] == ["2024-03-01T14:36:00Z", "2024-03-01T14:35:00Z"]


def test_cursor_pagination_walks_every_signal_once(client: TestClient, db: Database) -> None:
    stored = seed(db, n=23)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/signals", params=params).json()
        seen += [s["id"] for s in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == sorted((stored_id(s) for s in stored), reverse=True)


def test_one_signal_and_404(client: TestClient, db: Database) -> None:
    stored = seed(db)
    body = client.get(f"/api/v1/signals/{stored[2].id}").json()
    assert body["key"] == stored[2].key
    assert body["hash"] == stored[2].hash and body["seq"] == stored[2].seq
    assert body["payload"]["volume"] == 5002.0
    missing = client.get("/api/v1/signals/999999")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-01-01T00:00:00"}, "timezone"),
        ({"automation": "nope"}, "nope"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, db: Database, params: dict[str, str], fragment: str) -> None:
    seed(db)
    response = client.get("/api/v1/signals", params=params)
    assert 400 <= response.status_code < 500
    assert fragment in response.json()["detail"]


def test_signals_answer_the_same_through_the_edge_as_through_the_router(client: TestClient, db: Database) -> None:
    """GET /api/v1/signals is served by the edge middleware itself; HEAD still goes through the router."""
    seed(db)
    got = client.get("/api/v1/signals", params={"limit": 3})
    head = client.head("/api/v1/signals", params={"limit": 3})
    assert got.status_code == head.status_code == 200
    for name in ("content-length", "content-type", "x-frame-options", "content-security-policy", "ratelimit-limit"):
        assert got.headers[name] == head.headers[name], name
    for _ in range(2):  # the second time the filters come from the parsed-query cache: still refused
        bad = client.get("/api/v1/signals", params={"limit": 0})
        assert bad.status_code == 422
        assert [e["where"] for e in bad.json()["errors"]] == ["query.limit"]
        assert bad.headers["x-frame-options"] == "DENY"
    unknown = client.get("/api/v1/signals", params={"automation": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    assert client.get("/api/v1/signals", params={"limit": 2, "key": "K1"}).json()["items"][0]["key"] == "K1"


def test_healthz_and_metrics(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] is True
    client.get("/api/v1/signals")
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'signalmint_http_requests_total{method="GET",route="/api/v1/signals",status="200"}' in metrics.text


def test_openapi_lists_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/automations", "/api/v1/signals", "/api/v1/signals/{signal_id}", "/api/v1/stream"):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 200


def _read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
            continue
        field, _, value = line.partition(":")
        current[field] = value.lstrip(" ")
    return events


def test_stream_replays_after_last_event_id_then_goes_live(db: Database, live_server: type[LiveServer]) -> None:
    stored = seed(db, n=6)
    app = create_app(Settings(database=db.url), db)
    with live_server(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        headers = {"Last-Event-ID": str(stored[2].id)}
        with http.stream("GET", "/api/v1/stream", headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            replayed = _read_events(response, 3)
        assert [int(e["id"]) for e in replayed] == [s.id for s in stored[3:]]
        assert all(e["event"] == "signal" for e in replayed)
        assert json.loads(replayed[0]["data"])["hash"] == stored[3].hash

        with http.stream("GET", "/api/v1/stream", params={"automation": "alpha"}) as response:
            later = seed_more(db)  # committed after the stream started: it arrives live
            (live,) = _read_events(response, 1)
        assert int(live["id"]) == later.id


def seed_more(db: Database) -> Signal:
    signal = Signal("alpha", "NEW", T0 + timedelta(days=1), "volume_spike", 9.0, {"ratio": 9.0})
    (stored,) = db.write_sync(append_signals, "alpha", [signal], datetime.now(UTC))
    return stored


def test_stream_rejects_a_bad_last_event_id(client: TestClient) -> None:
    response = client.get("/api/v1/stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400
