"""Settings created by processes starting at once (two web replicas of the scale-out test both
created the server secret at start; one died on a duplicate key of ``settings_kv``)."""

from __future__ import annotations

import threading

from signalmint.store import Database
from signalmint.store.auth import get_or_create_setting, get_setting


def test_replicas_creating_a_setting_at_once_all_get_the_one_stored(db: Database) -> None:
    runs = 6
    results: list[str | None] = [None] * runs
    errors: list[BaseException] = []
    ready = threading.Barrier(runs)

    def start(i: int) -> None:
        ready.wait()
        try:
            results[i] = db.write_sync(get_or_create_setting, "server_secret", lambda: f"secret of replica {i}")
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = db.read_sync(get_setting, "server_secret")
    assert stored is not None and stored.startswith("secret of replica ")
    assert results == [stored] * runs
