"""Automations recorded by engines starting at once on one database (the fail-over test's two
engines both ran ``sync_automations`` at start; one died on a duplicate key)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from signalmint.records import Automation
from signalmint.store import Database, list_automations, sync_automations


def test_engines_starting_at_once_all_record_the_automations(db: Database) -> None:
    configured = [Automation(f"auto{i}", f"Auto {i}", "", "file", "volume_spike", {"window": i}) for i in range(20)]
    errors: list[BaseException] = []
    ready = threading.Barrier(6)

    def start() -> None:
        ready.wait()
        try:
            db.write_sync(sync_automations, configured, datetime.now(UTC))
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(a.name for a in db.read_sync(list_automations)) == sorted(a.name for a in configured)


def test_engines_with_other_automations_starting_at_once_never_deadlock(db: Database) -> None:
    """Each engine upserts its own automations and disables the others': two of them at once took
    row locks in opposite orders (PostgreSQL: "deadlock detected", the multi-host test's engine died)."""
    sets = [[Automation(f"e{e}a{i}", f"E{e} {i}", "", "file", "volume_spike", {}) for i in range(20)] for e in range(2)]
    db.write_sync(sync_automations, [a for s in sets for a in s], datetime.now(UTC))  # both already known
    errors: list[BaseException] = []
    ready = threading.Barrier(6)

    def start(i: int) -> None:
        ready.wait()
        for _ in range(5):
            try:
                db.write_sync(sync_automations, sets[i % 2], datetime.now(UTC))
            except BaseException as exc:  # collected: the assertion below names it
                errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    enabled = {a.name for a in db.read_sync(list_automations)}
    assert enabled in ({a.name for a in s} for s in sets)  # the last sync's set, whole
