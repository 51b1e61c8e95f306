"""The public chain: downloadable, checkable by outsiders, and silent about numbers not yet revealed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from signalmint.chain.hashing import commitment, verify_records
from signalmint.cli import app as cli
from signalmint.store import Database

from .test_access_api import NUMBERS, World
from .test_reveal import _aged, _world


def _download(world: World, automation: str = "spikes", **params: Any) -> list[dict[str, Any]]:
    response = world.get("/api/v1/chain", params={"automation": automation, **params})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_the_public_chain_shows_hashes_always_and_numbers_only_once_revealed(db: Database) -> None:
    world = _world(db)  # free (the public's mask): 15 minutes late, numbers revealed after 1 hour
    everything = _download(world)
    spikes = [s for s in world.signals if s.automation == "spikes"]
    released = [s for s in spikes if s.time <= datetime.now(UTC) - timedelta(minutes=15)]
    assert [r["seq"] for r in everything] == [s.seq for s in spikes]
    pending = [r for r in everything if r.get("pending")]
    assert all(set(r) == {"seq", "scheme", "pending"} for r in pending)  # no key, time, hash: still in its delay
    assert len(pending) == len(spikes) - len(released)
    records = [r for r in everything if not r.get("pending")]
    assert [r["seq"] for r in records] == [s.seq for s in released]
    # a pending signal's scheme-2 hash says nothing without its commitment: the next one links to it
    assert records[0]["prev_hash"] and records[0]["prev_hash"] not in {r.get("hash") for r in records}
    revealed = [r for r in records if r["revealed"]]
    veiled = [r for r in records if not r["revealed"]]
    assert {r["seq"] for r in revealed} == {s.seq for s in released if s.time <= datetime.now(UTC) - timedelta(hours=1)}
    assert revealed and veiled
    for r in veiled:
        assert r["hash"] and r["commitment"] and r["prev_hash"]
        assert r["payload"] is None and r["score"] is None and r["salt"] is None
    by_seq = {s.seq: s for s in spikes}
    for r in revealed:
        assert r["payload"] == dict(by_seq[r["seq"]].payload) and r["salt"] == by_seq[r["seq"]].salt
    raw = world.get("/api/v1/chain", params={"automation": "spikes"}).text
    for r in veiled:
        stored = by_seq[r["seq"]]
        assert stored.salt not in raw and f"{stored.payload['volume']}" not in raw
    report = verify_records("spikes", everything)
    assert report.ok and report.opened == len(revealed)
    assert report.checked == len(records) and report.unverified == len(pending)


def test_a_masked_signals_commitment_does_not_confirm_a_guessed_value(db: Database) -> None:
    world = _world(db)
    recent = _aged(world, 16)  # released to the public, numbers still hidden
    (record,) = [r for r in _download(world) if r["seq"] == recent.seq]
    assert not record["revealed"]
    guesses = [{**recent.payload, "volume": recent.payload["volume"] + d} for d in range(-500, 501)]
    assert recent.payload in guesses  # the true value is among the guesses...
    for salt in ("", "00" * 16):  # ...but without the salt none of them matches the published commitment
        assert all(commitment(salt, recent.score, g) != record["commitment"] for g in guesses)
    assert commitment(recent.salt, recent.score, recent.payload) == record["commitment"]  # opens once revealed
    page = world.get(f"/signals/{recent.id}").text
    assert recent.hash[:8] in page and recent.prev_hash[:8] in page and "none (first signal)" not in page
    assert recent.salt[:8] not in page and "published with the numbers" in page


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda rs: rs[9]["payload"].update(volume=1.0), "commitment"),  # a revealed number changed
        (lambda rs: rs[8].update(key="ZZZ"), "edited"),  # a veiled signal's public fields changed
        (lambda rs: rs[9].update(time="2011-01-01T00:00:00+00:00"), "edited"),  # a revealed one's time
        (lambda rs: rs.pop(10), "missing"),  # a signal removed
        (lambda rs: rs[10].update(prev_hash="0" * 64), "prev_hash"),  # relinked
        (lambda rs: rs[9].update(hash="0" * 64), "edited"),  # a hash replaced
    ],
)
def test_tampering_in_a_downloaded_chain_is_detected(db: Database, tamper: Any, reason: str) -> None:
    records = _download(_world(db))
    # seq 1-6 still in their delay, 7-9 released with numbers hidden, 10-12 revealed
    assert [bool(r.get("pending")) for r in records] == [True] * 6 + [False] * 6
    assert [r["revealed"] for r in records[6:]] == [False] * 3 + [True] * 3
    assert verify_records("spikes", records).ok
    tamper(records)
    report = verify_records("spikes", records)
    assert not report.ok and reason in report.reason


def test_the_chain_pages_with_x_next_after(db: Database) -> None:
    world = _world(db)
    first = world.get("/api/v1/chain", params={"automation": "spikes", "limit": 2})
    assert first.headers["x-next-after"] == "2" and len(first.text.splitlines()) == 2
    rest = _download(world, after=2)
    assert rest[0]["seq"] == 3
    assert world.get("/api/v1/chain", params={"automation": "nope"}).status_code == 404
    assert world.get("/api/v1/chain", params={"automation": "spikes", "limit": 0}).status_code == 422
    download = world.get("/automations/spikes/chain.jsonl")
    assert "attachment" in download.headers["content-disposition"] and download.text == _raw(world)


def _raw(world: World) -> str:
    return str(world.get("/api/v1/chain", params={"automation": "spikes"}).text)


def test_verify_url_checks_an_honest_instance_then_catches_an_edit(db: Database, live_server: Any) -> None:
    world = _world(db)
    runner = CliRunner()
    with live_server(world.app) as server:
        ok = runner.invoke(cli, ["verify", "--url", server.url])
        assert ok.exit_code == 0, ok.output
        assert "spikes:" in ok.output and "other:" in ok.output and "chain intact" in ok.output
        assert "revealed payloads match their commitments" in ok.output
        old = _aged(world, 120, "MSFT")

        def edit(conn: Any) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE signals DISABLE TRIGGER signals_append_only"))
            else:
                conn.execute(text("DROP TRIGGER signals_no_update"))
            conn.execute(text(f"UPDATE signals SET payload = '{{\"volume\": 1.0}}' WHERE id = {old.id}"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE signals ENABLE TRIGGER signals_append_only"))

        db.write_sync(edit)
        broken = runner.invoke(cli, ["verify", "--url", server.url, "--automation", "spikes", "--json"])
    assert broken.exit_code == 1
    (report,) = json.loads(broken.output)
    assert report["bad_seq"] == old.seq and "commitment" in report["reason"]


def test_verify_url_says_when_the_address_is_not_an_instance() -> None:
    result = CliRunner().invoke(cli, ["verify", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "cannot reach" in result.output


def test_numbers_masked_for_the_public_never_reach_the_chain(db: Database) -> None:
    world = _world(db)
    raw = _raw(world)
    for s in world.signals:
        if s.automation == "spikes" and s.time > datetime.now(UTC) - timedelta(hours=1):
            assert s.salt not in raw
    assert not any(set(r.get("payload") or {}) & set(NUMBERS) for r in _download(world) if not r.get("revealed"))
