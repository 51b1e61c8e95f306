"""Plans recorded by web replicas starting at once on one database (two replicas of the scale-out
test both ran ``sync_plans`` at start; one died on a duplicate key of ``plans``)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

from signalmint.config import PlanConfig, Settings
from signalmint.records import Plan
from signalmint.store import Database
from signalmint.store.plans import load_plans, sync_plans


def _configured(db: Database, price: int) -> list[Plan]:
    settings = Settings(database=db.url, plans=[PlanConfig(id=f"p{i}", price=price + i) for i in range(5)])
    return settings.current_plans()


def _at_once(db: Database, runs: list[list[Plan]]) -> tuple[list[list[Plan]], list[BaseException]]:
    results: list[list[Plan]] = [[] for _ in runs]
    errors: list[BaseException] = []
    ready = threading.Barrier(len(runs))

    def start(i: int) -> None:
        ready.wait()
        try:
            results[i] = db.write_sync(sync_plans, runs[i], datetime.now(UTC))
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_replicas_starting_at_once_all_sync_the_same_plans_to_one_version(db: Database) -> None:
    configured = _configured(db, 900)
    results, errors = _at_once(db, [configured] * 6)
    assert errors == []
    assert all([p.version for p in plans] == [1] * 5 for plans in results)
    stored = db.read_sync(load_plans)
    assert sorted(stored) == [(f"p{i}", 1) for i in range(5)]
    assert all(stored[(p.id, 1)].price == p.price for p in configured)


def test_replicas_with_other_terms_starting_at_once_each_get_a_version_of_their_own(db: Database) -> None:
    old, new = _configured(db, 900), _configured(db, 1900)
    results, errors = _at_once(db, [old, new, old, new])
    assert errors == []
    stored = db.read_sync(load_plans)
    for i in range(5):  # versions 1..n without a gap (a new one each time the latest had other terms)
        versions = sorted(v for plan_id, v in stored if plan_id == f"p{i}")
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2
    for plans in results:  # each replica was handed the version holding its own terms
        for plan in plans:
            assert dataclasses.replace(stored[(plan.id, plan.version)], version=plan.version) == plan
    current = db.read_sync(load_plans, current_only=True)
    assert len(current) == 5  # one current version per plan: whichever replica synced last
