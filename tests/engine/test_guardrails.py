"""Guardrails that protect paying subscribers, in virtual time (no sleeps).

A queue-fed live source stands in for an exchange: the test pushes frames and moves the
engine's clock. Staleness is checked by calling ``engine.watchdog.check()``; operator alerts
reach a real webhook receiver (uvicorn on 127.0.0.1) and are verified with the signing
secret; pages and /healthz are read from the real app in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from standardwebhooks import Webhook

from signalmint.config import AutomationConfig, DeliveryConfig, DetectorConfig, OperatorConfig, PlanConfig, Settings
from signalmint.records import Frame, Signal
from signalmint.registry import Registry
from signalmint.serve.wiring import wire_engine
from signalmint.store import Database, list_signals, verify_chain
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.health import list_stale_periods
from signalmint.store.outbox import add_endpoint
from signalmint.store.plans import load_plans
from signalmint.store.signals import signal_hash
from signalmint.store.tables import deliveries
from signalmint.web.app import create_app

from ..conftest import LiveServer

MINUTE = timedelta(minutes=1)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEYS = ["AAA", "BBB"]


class Clock:
    """The engine's virtual clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class QueueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cadence_seconds: float = 60.0


def queue_registry(base: Registry, feed: asyncio.Queue[Frame]) -> Registry:
    """The built-in detectors plus a live source of kind ``queue`` that yields what ``feed`` gets."""

    class QueueSource:
        kind: ClassVar[str] = "queue"
        Options: ClassVar[type[BaseModel]] = QueueOptions
        live: ClassVar[bool] = True

        def __init__(self, cadence_seconds: float = 60.0) -> None:
            self.cadence = timedelta(seconds=cadence_seconds)
            self.rejected: dict[str, int] = {}

        async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
            while True:
                yield await feed.get()

    return Registry(sources={"queue": QueueSource}, detectors=dict(base.detectors))


def bar(at: datetime, volumes: dict[str, float]) -> Frame:
    keys = np.array(list(volumes))
    close = np.full(len(keys), 10.0)
    return Frame(
        keys=keys,
        times=np.full(len(keys), np.datetime64(at.replace(tzinfo=None), "ns")),
        columns={
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.array(list(volumes.values()), dtype=np.float64),
        },
    )


class Recorder:
    """An ASGI webhook receiver that keeps every POST body and its headers."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def payloads(self) -> list[dict[str, Any]]:
        """Each alert, its Standard Webhooks signature checked."""
        hook = Webhook(SECRET)
        return [hook.verify(body, headers) for headers, body in self.received]


def automation(**extra: Any) -> AutomationConfig:
    return AutomationConfig(
        name="live",
        source={"kind": "queue"},
        detector=DetectorConfig(kind="volume_spike", window=3, ratio=3, z=4),
        retention=None,
        **extra,
    )


class Rig:
    """An engine on a virtual clock fed through a queue, with the app in-process."""

    def __init__(self, db: Database, registry: Registry, settings: Settings, start: datetime) -> None:
        self.db = db
        self.feed: asyncio.Queue[Frame] = asyncio.Queue()
        self.clock = Clock(start)
        self.settings = settings
        plugins = queue_registry(registry, self.feed)
        self.engine, self.fanout = wire_engine(settings, db, plugins, clock=self.clock, watch_every=None)
        self.runner = self.engine.runners["live"]
        self.app = create_app(settings, db, engine=self.engine)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")

    async def push(self, at: datetime, volumes: dict[str, float], *, arrives: datetime | None = None) -> None:
        """A bar stamped ``at`` arrives at ``arrives`` (default: at once); returns once committed."""
        self.clock.now = arrives or at
        await self.feed.put(bar(at, volumes))
        for _ in range(2000):
            if self.runner.status.cursor == at:  # set once the tick's transaction committed
                return
            await asyncio.sleep(0.005)  # yields until the engine task commits (a condition, not a delay)
        raise AssertionError("the engine did not take the frame")

    async def check(self, at: datetime) -> None:
        self.clock.now = at
        await self.engine.watchdog.check()

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.http.get("/healthz")).json()
        return body

    async def live_health(self) -> dict[str, Any]:
        found: dict[str, Any] = next(a for a in (await self.health())["automations"] if a["name"] == "live")
        return found


def run(
    db: Database, registry: Registry, settings: Settings, start: datetime, body: Callable[[Rig], Awaitable[None]]
) -> None:
    async def main() -> None:
        rig = Rig(db, registry, settings, start)
        await rig.engine.start()
        try:
            await body(rig)
        finally:
            await rig.engine.stop()
            await rig.http.aclose()

    asyncio.run(main())


MONDAY = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York, in the past (pages show it)


def test_staleness_is_raised_and_cleared_with_operator_alerts(
    db: Database, registry: Registry, live_server: type[LiveServer]
) -> None:
    receiver = Recorder()
    with live_server(receiver) as server:
        settings = Settings(
            database=db.url,
            delivery=DeliveryConfig(allow_loopback_targets=True),
            operator=OperatorConfig(alerts=[f"webhook+{server.url}/ops"], webhook_secret=SECRET),
            automations=[automation()],
        )

        async def body(rig: Rig) -> None:
            await rig.push(MONDAY, {"AAA": 100.0, "BBB": 50.0})
            await rig.check(MONDAY + 3 * MINUTE)  # exactly k x cadence: not yet
            assert (await rig.live_health())["stale"] is False
            assert receiver.received == []

            await rig.check(MONDAY + 3 * MINUTE + timedelta(seconds=1))
            health = await rig.health()
            live = await rig.live_health()
            assert health["stale"] == ["live"] and live["stale"] is True
            assert live["stale_since"] == MONDAY.isoformat() and live["last_bar_age_seconds"] == 181.0
            assert live["stale_after_seconds"] == 180.0 and live["cadence_seconds"] == 60.0
            page = (await rig.http.get("/automations/live")).text
            assert "Data delayed since" in page and "2026-11-30 15:00 UTC" in page
            metrics = (await rig.http.get("/metrics")).text
            assert 'signalmint_automation_stale{automation="live"} 1.0' in metrics
            assert 'signalmint_last_bar_age_seconds{automation="live"} 181.0' in metrics
            [alert] = receiver.payloads()
            assert alert["type"] == "automation.stale" and alert["data"]["automation"] == "live"
            assert alert["data"]["since"] == MONDAY.isoformat()

            await rig.check(MONDAY + 10 * MINUTE)  # still stale: no second alert
            assert len(receiver.received) == 1

            await rig.push(MONDAY + 11 * MINUTE, {"AAA": 100.0, "BBB": 50.0})
            await rig.check(MONDAY + 11 * MINUTE)
            assert (await rig.live_health())["stale"] is False
            assert "Data delayed" not in (await rig.http.get("/automations/live")).text
            assert 'signalmint_automation_stale{automation="live"} 0.0' in (await rig.http.get("/metrics")).text
            _, recovered = receiver.payloads()
            assert recovered["type"] == "automation.recovered" and recovered["data"]["since"] == MONDAY.isoformat()
            [period] = db.read_sync(list_stale_periods, "live")
            assert period.since == MONDAY and period.ended_at == MONDAY + 11 * MINUTE
            assert period.detected_at == MONDAY + 3 * MINUTE + timedelta(seconds=1)

        run(db, registry, settings, MONDAY, body)


def test_operator_email_alerts_go_through_smtp(db: Database, registry: Registry) -> None:
    from signalmint.config import EmailConfig

    from ..delivery.test_email import Recorder as SmtpRecorder
    from ..delivery.test_email import _serve

    with _serve(SmtpRecorder()) as smtp:
        settings = Settings(
            database=db.url,
            email=EmailConfig(host="127.0.0.1", port=smtp.port, starttls=False),
            operator=OperatorConfig(alerts=["mailto:ops@example.com"]),
            automations=[automation()],
        )

        async def body(rig: Rig) -> None:
            await rig.push(MONDAY, {"AAA": 100.0})
            await rig.check(MONDAY + 4 * MINUTE)
            await rig.push(MONDAY + 5 * MINUTE, {"AAA": 100.0})
            await rig.check(MONDAY + 5 * MINUTE)

        run(db, registry, settings, MONDAY, body)
        subjects = [str(smtp.handler.parsed(i)["subject"]) for i in range(len(smtp.handler.received))]
        assert subjects == [
            "[signalmint] live: data delayed since 2026-11-30 15:00 UTC",
            "[signalmint] live: data flowing again",
        ]
        assert all(rcpt == ["ops@example.com"] for _, rcpt, _ in smtp.handler.received)


def test_no_staleness_alarm_while_the_market_is_closed(
    db: Database, registry: Registry, live_server: type[LiveServer]
) -> None:
    receiver = Recorder()
    friday_close = datetime(2026, 12, 4, 20, 59, tzinfo=UTC)  # 15:59 in New York
    with live_server(receiver) as server:
        settings = Settings(
            database=db.url,
            delivery=DeliveryConfig(allow_loopback_targets=True),
            operator=OperatorConfig(alerts=[f"webhook+{server.url}/ops"], webhook_secret=SECRET),
            automations=[automation(calendar="us_equities")],
        )

        async def body(rig: Rig) -> None:
            await rig.push(friday_close, {"AAA": 100.0})
            for at in (
                datetime(2026, 12, 4, 23, 0, tzinfo=UTC),  # Friday evening
                datetime(2026, 12, 5, 15, 0, tzinfo=UTC),  # Saturday
                datetime(2026, 12, 6, 15, 0, tzinfo=UTC),  # Sunday
                datetime(2026, 12, 7, 14, 32, tzinfo=UTC),  # Monday 9:32: 2 minutes of open market
                datetime(2026, 12, 25, 16, 0, tzinfo=UTC),  # Christmas, a holiday
            ):
                await rig.check(at)
                live = await rig.live_health()
                assert live["stale"] is False, at
            assert (await rig.live_health())["market_open"] is False
            assert receiver.received == []
            await rig.check(datetime(2026, 12, 7, 14, 33, 1, tzinfo=UTC))  # 3 minutes and 1 s after the open
            assert (await rig.live_health())["stale"] is True
            assert [p["type"] for p in receiver.payloads()] == ["automation.stale"]

        run(db, registry, settings, friday_close, body)


def _subscriber(db: Database, url: str) -> None:
    def write(conn: Any) -> None:
        now = datetime.now(UTC)
        plan = next(p for p in load_plans(conn).values() if p.id == "premium")
        person = ensure_subscriber(conn, "ann@example.com", now)
        confirm_subscriber(conn, person.id, now)
        start_subscription(conn, person.id, plan, now, origin="test", state="active")
        add_endpoint(conn, person.id, "webhook", url, now, [SECRET])

    db.write_sync(write)


def test_a_late_signal_is_stored_but_not_delivered(db: Database, registry: Registry) -> None:
    settings = Settings(
        database=db.url,
        delivery=DeliveryConfig(allow_loopback_targets=True),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])],
        automations=[automation()],
    )

    def outbox_rows(conn: Any) -> list[int]:
        return list(conn.execute(select(deliveries.c.signal_id)).scalars())

    async def body(rig: Rig) -> None:
        _subscriber(db, "webhook+http://127.0.0.1:9/hook")
        rig.fanout.invalidate()
        for minute, volume in enumerate((100.0, 110.0, 90.0)):
            await rig.push(MONDAY + minute * MINUTE, {"AAA": volume, "BBB": volume})
        await rig.push(MONDAY + 3 * MINUTE, {"AAA": 1000.0, "BBB": 100.0})  # on time: an alert
        # an outage, then the backfill: the spike in bar 4 reaches us 10 minutes after it closed
        await rig.push(MONDAY + 4 * MINUTE, {"AAA": 100.0, "BBB": 1000.0}, arrives=MONDAY + 14 * MINUTE)

        signals = {s.key: s for s in db.read_sync(list_signals, automation="live")}
        assert set(signals) == {"AAA", "BBB"}
        on_time, late = signals["AAA"], signals["BBB"]
        assert not on_time.late and late.late
        assert db.read_sync(outbox_rows) == [on_time.id]
        assert db.read_sync(verify_chain, "live").ok
        live = await rig.live_health()
        assert live["late_signals"] == 1 and live["max_signal_age_seconds"] == 180.0
        page = (await rig.http.get(f"/signals/{late.id}")).text
        assert "Late signal." in page
        assert "Late signal." not in (await rig.http.get(f"/signals/{on_time.id}")).text
        assert (await rig.http.get(f"/api/v1/signals/{late.id}")).json()["late"] is True
        assert (await rig.http.get(f"/api/v1/signals/{on_time.id}")).json()["late"] is False
        assert 'signalmint_late_signals_total{automation="live"} 1.0' in (await rig.http.get("/metrics")).text

    run(db, registry, settings, MONDAY, body)


def test_the_late_flag_is_covered_by_the_hash() -> None:
    signal = Signal("live", "AAA", MONDAY, "volume_spike", 8.0, {"ratio": 8.0})
    on_time = signal_hash(signal, 1, "")
    assert signal_hash(replace(signal, late=True), 1, "") != on_time  # a late signal cannot pass for on time


def test_gaps_are_counted_and_a_long_gap_restarts_the_warm_up(db: Database, registry: Registry) -> None:
    settings = Settings(database=db.url, automations=[automation(gap_reset="5m")])

    async def body(rig: Rig) -> None:
        for minute, volume in enumerate((100.0, 110.0, 90.0)):
            await rig.push(MONDAY + minute * MINUTE, {"AAA": volume, "BBB": volume})
        await rig.push(MONDAY + 5 * MINUTE, {"AAA": 100.0})  # AAA skips minutes 3 and 4: a short gap
        live = await rig.live_health()
        assert (live["gaps"], live["missing_bars"], live["warmup_resets"]) == (1, 2, 0)
        # both keys come back after a long outage with a volume that would be a spike against
        # the old baseline: the baseline is not taken across the outage, so nothing flags
        await rig.push(MONDAY + 30 * MINUTE, {"AAA": 1000.0, "BBB": 1000.0})
        live = await rig.live_health()
        assert (live["gaps"], live["missing_bars"], live["warmup_resets"]) == (3, 2 + 24 + 27, 2)
        assert db.read_sync(list_signals, automation="live") == []
        metrics = (await rig.http.get("/metrics")).text
        assert 'signalmint_gaps_total{automation="live"} 3.0' in metrics
        assert 'signalmint_missing_bars_total{automation="live"} 53.0' in metrics
        # the warm-up starts again: three bars of history, then a spike flags
        for minute, volume in zip((31, 32, 33), (100.0, 110.0, 90.0), strict=True):
            await rig.push(MONDAY + minute * MINUTE, {"AAA": volume, "BBB": volume})
        await rig.push(MONDAY + 34 * MINUTE, {"AAA": 1000.0, "BBB": 100.0})
        [signal] = db.read_sync(list_signals, automation="live")
        assert signal.key == "AAA" and signal.payload["history"] == 4.0

    run(db, registry, settings, MONDAY, body)


def test_stale_periods_survive_a_restart_and_recover_once(db: Database, registry: Registry) -> None:
    settings = Settings(database=db.url, automations=[automation()])

    async def first(rig: Rig) -> None:
        await rig.push(MONDAY, {"AAA": 100.0})
        await rig.check(MONDAY + 5 * MINUTE)
        assert (await rig.live_health())["stale"] is True

    async def second(rig: Rig) -> None:
        assert (await rig.live_health())["stale_since"] == MONDAY.isoformat()
        await rig.push(MONDAY + 20 * MINUTE, {"AAA": 100.0})
        await rig.check(MONDAY + 20 * MINUTE)
        assert (await rig.live_health())["stale"] is False

    run(db, registry, settings, MONDAY, first)
    run(db, registry, settings, MONDAY + 19 * MINUTE, second)
    [period] = db.read_sync(list_stale_periods, "live")
    assert period.ended_at == MONDAY + 20 * MINUTE


def test_replays_are_never_stale_nor_late() -> None:
    from signalmint.engine.freshness import guard_for
    from signalmint.sources.file import FileReplay

    config = AutomationConfig(
        name="replay",
        source={"kind": "file", "path": "x.csv"},
        detector=DetectorConfig(kind="volume_spike"),
    )
    guard = guard_for(config, FileReplay.__new__(FileReplay))
    assert (guard.stale_after, guard.max_signal_age, guard.cadence) == (None, None, None)
    guard = guard_for(config.model_copy(update={"cadence": MINUTE}), FileReplay.__new__(FileReplay))
    assert guard.gap_reset == 10 * MINUTE and guard.stale_after is None


def test_operator_webhook_alerts_need_a_secret() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        OperatorConfig(alerts=["webhook+https://ops.example/hook"])
    with pytest.raises(ValueError, match="mailto"):
        OperatorConfig(alerts=["https://ops.example/hook"])
    assert OperatorConfig(alerts=["mailto:ops@example.com"]).alerts == ["mailto:ops@example.com"]
    with pytest.raises(ValueError, match=r"email\.host"):
        Settings(operator=OperatorConfig(alerts=["mailto:ops@example.com"]))
    with pytest.raises(ValueError, match=r"telegram\.token"):
        Settings(operator=OperatorConfig(alerts=["telegram://12345"]))
