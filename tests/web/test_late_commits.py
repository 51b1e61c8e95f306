"""A commit that becomes visible after a live stream passed its position is still streamed.

``created_at`` is stamped when the engine's transaction starts; a transaction that runs longer
than ``SETTLE`` (thousands of outbox rows on a busy host) shows its signal after the stream's
cursor has moved past that stamp. :func:`late_released` finds it; the multi-host test saw it lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from signalmint.records import Automation, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.web.auth import Viewer
from signalmint.web.visibility import LATE, late_released, released_after

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADMIN = Viewer(kind="admin", signature=("admin",))


def _store(db: Database, key: str, created: datetime) -> Signal:
    signal = Signal(
        automation="spikes",
        key=key,
        time=created - timedelta(seconds=5),
        kind="volume_spike",
        score=6.0,
        payload={"ratio": 6.0},
    )
    (stored,) = db.write_sync(append_signals, "spikes", [signal], created)
    return stored


def test_a_signal_committed_late_is_sent_once_and_only_after_the_stream_start(db: Database) -> None:
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], NOW)
    floor = (NOW - timedelta(seconds=60), 0)
    early = _store(db, "AAPL", NOW - timedelta(seconds=30))  # before the stream started: never sent
    floor = (NOW - timedelta(seconds=20), 0)
    first = _store(db, "MSFT", NOW - timedelta(seconds=10))
    batch = db.read_sync(released_after, ADMIN, floor, NOW)
    assert [s.id for _, s in batch] == [first.id]
    cursor, sent = batch[-1][0], {first.id or 0}

    # a transaction stamped before ``first`` commits only now
    late = _store(db, "IBM", NOW - timedelta(seconds=15))
    assert db.read_sync(released_after, ADMIN, cursor, NOW) == []  # the ordinary read has passed it
    found = db.read_sync(late_released, ADMIN, cursor, floor, sent, NOW)
    assert [s.id for _, s in found] == [late.id]
    sent.add(late.id or 0)
    assert db.read_sync(late_released, ADMIN, cursor, floor, sent, NOW) == []  # sent once
    assert early.id not in {s.id for _, s in found}

    # further back than LATE behind the stream: out of reach (the window stays bounded)
    far = _store(db, "TSLA", NOW - LATE - timedelta(seconds=11))
    assert far.id not in {
        s.id for _, s in db.read_sync(late_released, ADMIN, cursor, (datetime.min.replace(tzinfo=UTC), 0), sent, NOW)
    }
