"""API access is a plan term (issue 9, items 2 and 3), held for every credential that reads the API.

A browser session spends from the same token bucket and monthly quota as the subscriber's keys
(and is metered like them); a plan without the API gets 403 naming the plans that include it;
the pricing cards, the dashboard and the README state the terms the API enforces.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from signalmint.billing.usage import month_of
from signalmint.config import PlanConfig, WebConfig
from signalmint.demo.seed import demo_plans
from signalmint.records import Plan
from signalmint.store import Database
from signalmint.store.usage import add_usage, get_usage
from signalmint.web.api_access import LIVE_BURST, LIVE_STREAMS
from signalmint.web.money import api_terms

from .test_access_api import World

README = Path(__file__).resolve().parents[2] / "README.md"
READS = ["/api/v1/signals", "/api/v1/signals/{id}", "/api/v1/automations", "/api/v1/plans"]


def session_client(world: World, who: str) -> TestClient:
    """A client holding a signed-in browser session of ``who`` (no API key)."""
    token = asyncio.run(world.ctx.accounts.new_session(world.ids[who], admin=False))
    client = TestClient(world.app)
    client.cookies.set("sm_session", token)
    return client


def plan_of(world: World, plan_id: str) -> Plan:
    plans: list[Plan] = [p for p in world.ctx.access.current() if p.id == plan_id]
    (plan,) = plans
    return plan


# --- item 2: a session is not a free, unmetered API ------------------------------------------------


def test_a_session_is_rate_limited_metered_and_refused_past_the_quota(db: Database) -> None:
    plans = [
        PlanConfig(id="pro", channels=["web", "api"], api_quota=3, overage_price=5, rate_per_second=100, burst=100),
        PlanConfig(id="free", channels=["web", "api"]),
        PlanConfig(id="premium", channels=["web", "api"]),
    ]
    world = World(db, plans=plans)
    browser = session_client(world, "pro")
    answers = [browser.get("/api/v1/signals") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]  # an empty wallet pays no overage
    assert answers[0].json()["items"], "the session reads what the plan shows"
    for answer in answers:
        assert answer.headers["ratelimit-limit"] == "100" and "ratelimit-remaining" in answer.headers
        assert answer.headers["ratelimit-policy"] == "100;w=1"
    assert [a.headers.get("x-quota-remaining") for a in answers[:3]] == ["2", "1", "0"]
    assert "monthly quota of 3 calls is used up" in answers[3].json()["detail"]
    assert int(answers[3].headers["retry-after"]) >= 1
    # the key of the same subscriber finds the quota spent by the browser
    assert world.get("/api/v1/signals", "pro").status_code == 429
    asyncio.run(world.ctx.meter.flush())
    assert world.db.read_sync(get_usage, world.ids["pro"], month_of(datetime.now(UTC))) == (3, 0)


def test_a_session_and_a_key_share_one_token_bucket(db: Database) -> None:
    plans = [
        PlanConfig(id="pro", channels=["web", "api"], rate_per_second=0.01, burst=3),
        PlanConfig(id="free"),
        PlanConfig(id="premium"),
    ]
    world = World(db, plans=plans)
    browser = session_client(world, "pro")
    assert [browser.get("/api/v1/automations").status_code for _ in range(2)] == [200, 200]
    assert world.get("/api/v1/signals", "pro").status_code == 200
    refused = [browser.get("/api/v1/signals"), world.get("/api/v1/automations", "pro")]
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.headers["ratelimit-remaining"] == "0" and int(r.headers["retry-after"]) >= 1 for r in refused)
    assert world.get("/api/v1/signals", "pro2").status_code == 200  # another subscriber: another bucket


def test_the_public_is_limited_per_address(db: Database) -> None:
    world = World(db, web=WebConfig(public_rate_per_second=0.01, public_burst=2))
    answers = [world.client.get("/api/v1/signals") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["ratelimit-limit"] == "2" and "retry-after" in answers[2].headers


# --- item 3: API access is a plan term -------------------------------------------------------------


def _no_api_world(db: Database) -> World:
    return World(
        db,
        plans=[
            PlanConfig(id="free", delay="15m", watchlist=2),
            PlanConfig(id="premium", name="Premium", price=2900, channels=["web", "email"]),
            PlanConfig(id="pro", name="Pro", price=9900, channels=["web", "api"], api_quota=1000, overage_price=1),
        ],
    )


def test_a_plan_without_the_api_gets_403_naming_the_plan_that_has_it(db: Database) -> None:
    world = _no_api_world(db)
    pro_terms = api_terms(plan_of(world, "pro"))
    browser = session_client(world, "premium")
    for path in READS:
        url = path.replace("{id}", str(world.signals[0].id))
        for answer in (world.get(url, "premium"), browser.get(url)):
            assert answer.status_code == 403, (url, answer.status_code)
            detail = answer.json()["detail"]
            assert "the Premium plan does not include the API" in detail and f"Pro ({pro_terms})" in detail
    assert world.get("/api/v1/stream", "premium").status_code == 403  # a key streams only with the API
    assert world.get("/api/v1/me", "premium").status_code == 200  # the account routes stay open
    assert world.get("/api/v1/signals", "pro").status_code == 200
    assert world.client.get("/api/v1/signals").status_code == 200  # the public view stays as it was


def test_the_dashboards_live_feed_stays_open_to_sessions_but_bounded(db: Database, live_server: Any) -> None:
    world = _no_api_world(db)
    token = asyncio.run(world.ctx.accounts.new_session(world.ids["premium"], admin=False))
    sid = world.ids["premium"]

    def open_streams(target: int) -> None:
        deadline = time.monotonic() + 10
        while world.ctx.live_streams.get(sid, 0) != target and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition, not a guessed delay
        assert world.ctx.live_streams.get(sid, 0) == target

    with (
        live_server(world.app) as server,
        httpx.Client(base_url=server.url, timeout=10, cookies={"sm_session": token}) as http,
    ):
        with contextlib.ExitStack() as streams:
            for n in range(1, LIVE_STREAMS + 1):
                response = streams.enter_context(http.stream("GET", "/api/v1/stream"))
                assert response.status_code == 200 and "x-quota-remaining" not in response.headers
                open_streams(n)
            refused = http.get("/api/v1/stream")
            assert refused.status_code == 429 and "live streams are open" in refused.json()["detail"]
        open_streams(0)
        opened = LIVE_STREAMS + 1
        statuses = []
        for _ in range(LIVE_BURST - opened + 1):  # what is left of the bucket, then one more
            with http.stream("GET", "/api/v1/stream") as response:
                statuses.append(response.status_code)
        assert statuses[:-1] == [200] * (LIVE_BURST - opened) and statuses[-1] == 429
    asyncio.run(world.ctx.meter.flush())
    assert world.db.read_sync(get_usage, sid, month_of(datetime.now(UTC))) == (0, 0)  # not API calls


def test_pricing_cards_dashboard_and_api_agree_on_the_demo_terms(db: Database) -> None:
    world = World(db, plans=demo_plans())
    cards = world.client.get("/signup").text
    month = month_of(datetime.now(UTC))
    for plan in world.ctx.access.current():
        terms = api_terms(plan)
        assert plan.api and f"REST API and live stream: {terms}</li>" in cards, plan.id
        dashboard = session_client(world, plan.id).get("/dashboard").text
        assert f"{plan.name}: {terms}." in dashboard, plan.id
        # enforced as stated: the bucket, the quota, and what happens past it
        first = world.get("/api/v1/signals", plan.id)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == str(plan.burst)
        assert first.headers["ratelimit-policy"] == f"{plan.burst};w={math.ceil(plan.burst / plan.rate_per_second)}"
        assert plan.api_quota is not None and first.headers["x-quota-remaining"] == str(plan.api_quota - 1)
        assert f"{plan.api_quota:,} calls/month" in terms and f"up to {plan.rate_per_second:g} a second" in terms
        world.db.write_sync(add_usage, {(world.ids[plan.id], month): (plan.api_quota, 0)}, datetime.now(UTC))
        world.ctx.meter._stored.clear()  # the store changed behind the meter's back
        past = world.get("/api/v1/signals", plan.id)
        assert past.status_code == 429
        if plan.overage_price:
            assert "then $0.01 a call" in terms and "keep calling at $0.01 a call" in past.json()["detail"]
        else:
            assert "then none until the next month" in terms and "top up" not in past.json()["detail"]


def test_a_plan_without_the_api_says_so_on_its_card_and_dashboard(db: Database) -> None:
    world = _no_api_world(db)
    cards = world.client.get("/signup").text
    assert cards.count("No API access</li>") == 2  # free and premium
    pro = plan_of(world, "pro")
    assert f"REST API and live stream: {api_terms(pro)}</li>" in cards
    dashboard = session_client(world, "premium").get("/dashboard").text
    assert "Your Premium plan does not include the API" in dashboard
    assert f"Pro includes it: {api_terms(pro)}" in dashboard


def test_the_readme_sells_the_plans_the_demo_enforces() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Plans: the three-tier flagship", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    documented = [PlanConfig(**p).to_plan(1) for p in yaml.safe_load(block)["plans"]]
    demo = [p.to_plan(1) for p in demo_plans()]
    assert [replace(p, name="", description="") for p in documented] == [
        replace(p, name="", description="") for p in demo
    ]


@pytest.mark.parametrize("quota", [None, 5])
def test_unlimited_and_quota_terms_in_words(quota: int | None) -> None:
    plan = Plan(id="p", version=1, name="P", automations=("*",), channels=frozenset({"api"}), api_quota=quota)
    assert api_terms(plan).startswith("unlimited calls" if quota is None else "5 calls/month, then none")


def test_api_terms_without_api_access_are_a_config_error(registry: Any) -> None:
    from signalmint.config import parse_settings
    from signalmint.errors import ConfigError

    text = "database: sqlite:///x.db\nplans:\n  - id: premium\n    channels: [web, email]\n    api_quota: 1000\n"
    with pytest.raises(ConfigError) as info:
        parse_settings(text, file="cfg.yaml", registry=registry, env={})
    assert info.value.line == 3 and "add api to channels" in str(info.value)
    fixed = text.replace("[web, email]", "[web, email, api]")
    assert parse_settings(fixed, file="cfg.yaml", registry=registry, env={}).plans[0].api_quota == 1000
