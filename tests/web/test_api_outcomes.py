"""Outcomes in the JSON API: the track record's gating (no masked move leaks), filters, pages,
the API's auth and limits, and the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from signalmint.store import Database
from signalmint.store.outcomes import insert_outcomes

from ..conftest import stored_id
from .test_reveal import _aged, _world
from .test_track_record import MASKED, REVEALED, _outcome

URL = "/api/v1/automations/spikes/outcomes"


@pytest.fixture
def world(db: Database) -> Any:
    """As the track-record tests: per key, an old signal (revealed to the public) and a recent one
    (released to the public with its numbers masked), each measured at 5 bars, the old one at 1 too."""
    world = _world(db)
    rows = []
    for key, hit in (("AAPL", True), ("MSFT", True), ("IBM", False)):
        old, recent = _aged(world, 120, key), _aged(world, 16, key)
        rows += [
            _outcome(old, 5, REVEALED, hit),
            _outcome(recent, 5, MASKED, True),
            _outcome(old, 1, REVEALED / 2, hit),
        ]
    db.write_sync(insert_outcomes, rows, datetime.now(UTC))
    return world


def _by_id(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {item["signal_id"]: item for item in body["items"]}


def test_the_public_gets_the_revealed_outcomes_and_the_masked_ones_withheld(world: Any) -> None:
    answer = world.get(URL)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert str(MASKED) not in answer.text and str(100 * (1 + MASKED)) not in answer.text  # the masked move never leaks
    items = _by_id(body)
    for key in ("AAPL", "MSFT", "IBM"):
        old, recent = _aged(world, 120, key), _aged(world, 16, key)
        assert items[stored_id(recent)]["withheld"] is True and items[stored_id(recent)]["outcomes"] is None
        shown = items[stored_id(old)]
        assert shown["withheld"] is False and [o["horizon"] for o in shown["outcomes"]] == [1, 5]
        assert shown["outcomes"][1]["ret"] == pytest.approx(REVEALED) and shown["key"] == key
    assert _aged(world, 5).id not in items  # not released to the public yet
    five = next(s for s in body["summary"] if s["horizon"] == 5)
    assert (five["count"], five["hits"]) == (3, 2)  # as the page: 2 of 3, the masked ones left out
    assert five["mean_return"] == pytest.approx(REVEALED)
    assert body["horizons"] == [1, 5] and body["withheld"] == 3 and body["measured"] == 3
    assert body["automation"] == "spikes" and body["truncated"] is False


def test_a_paying_subscriber_gets_every_outcome(world: Any) -> None:
    body = world.get(URL, "premium").json()
    assert body["withheld"] == 0 and all(not i["withheld"] for i in body["items"])
    five = next(s for s in body["summary"] if s["horizon"] == 5)
    assert (five["count"], five["hits"]) == (6, 5)  # 5 of 6, as the page shows premium
    recent = _by_id(body)[stored_id(_aged(world, 16))]
    assert recent["outcomes"][0]["ret"] == pytest.approx(MASKED)
    assert world.get(URL, "admin").json()["summary"] == body["summary"]


def test_the_plans_keys_hold_and_the_filters_and_pages_work(world: Any) -> None:
    free = world.get(URL, "free").json()  # the free plan's watchlist: AAPL and MSFT
    assert {i["key"] for i in free["items"]} <= {"AAPL", "MSFT"} and free["items"]
    only = world.get(URL, "premium", params={"key": "IBM", "horizon": 5}).json()
    assert {i["key"] for i in only["items"]} == {"IBM"}
    assert all(o["horizon"] == 5 for i in only["items"] for o in i["outcomes"])
    assert [s["horizon"] for s in only["summary"]] == [5] and only["summary"][0]["count"] == 2

    whole = world.get(URL, "premium").json()
    seen: list[int] = []
    cursor = None
    for _ in range(20):
        page = world.get(URL, "premium", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [i["signal_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["signal_id"] for i in whole["items"]] and seen == sorted(seen, reverse=True)


def test_bad_requests_get_clear_errors_and_the_api_terms_hold(world: Any) -> None:
    missing = world.get("/api/v1/automations/nope/outcomes")
    assert missing.status_code == 404 and "GET /api/v1/automations" in missing.json()["detail"]
    assert world.get(URL, params={"cursor": "bm9wZQ"}).status_code == 400
    bad = world.get(URL, params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["where"] == "query.limit"
    assert world.get(URL, params={"horizon": "x"}).status_code == 422
    unknown = world.client.get(URL, headers={"Authorization": "Bearer sm_nope_0000"})
    assert unknown.status_code == 401
    pro = world.get(URL, "pro")  # a call of the plan's quota, with its limit headers
    assert pro.status_code == 200 and "X-Quota-Remaining" in pro.headers and "RateLimit-Limit" in pro.headers
    before = int(pro.headers["X-Quota-Remaining"])
    assert int(world.get(URL, "pro").headers["X-Quota-Remaining"]) == before - 1


def test_the_route_is_in_the_openapi_document(world: Any) -> None:
    doc = world.get("/openapi.json").json()
    operation = doc["paths"]["/api/v1/automations/{name}/outcomes"]["get"]
    assert {"200", "400", "401", "403", "404", "422", "429"} <= set(operation["responses"])
    assert operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert {p["name"] for p in operation["parameters"]} == {"name", "key", "horizon", "limit", "cursor"}
    page = doc["components"]["schemas"]["OutcomePage"]
    assert {"summary", "items", "withheld", "next_cursor"} <= set(page["properties"])


def test_a_plan_without_the_api_gets_403_and_the_public_is_limited(db: Database) -> None:
    from signalmint.config import WebConfig

    from .test_access_api import World
    from .test_api_terms import _no_api_world

    world = _no_api_world(db)
    answer = world.get(URL, "premium")
    assert answer.status_code == 403 and "the Premium plan does not include the API" in answer.json()["detail"]
    assert world.get(URL, "pro").status_code == 200
    limited = World(db, web=WebConfig(public_rate_per_second=0.01, public_burst=2))
    answers = [limited.client.get(URL) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429] and "retry-after" in answers[2].headers
