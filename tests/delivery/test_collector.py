"""Garbage collections around delivery rounds (delivery/collector.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from signalmint.delivery.collector import IDLE_EVERY, IdleCollections
from signalmint.delivery.runner import channel_context
from signalmint.delivery.worker import Worker
from signalmint.store import Database

from .conftest import HttpSink
from .test_outbox import PEPPER, Outbox, spike


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def no_automatic_collections() -> Iterator[None]:
    """Only the collections a test asks for (an automatic one could free its cycle first)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: reference counting never frees it


def test_idle_collections_free_cycles_at_most_every_so_often(no_automatic_collections: None) -> None:
    clock = Clock()
    collections = IdleCollections(clock)
    cycle = Node()
    gone = weakref.ref(cycle)
    del cycle
    assert collections.idle() is False and gone() is not None  # nothing due yet
    clock.now += IDLE_EVERY
    assert collections.idle() is True and gone() is None
    assert collections.idle() is False  # not again within the period
    clock.now += IDLE_EVERY
    assert collections.idle() is True and collections.made == 2


def test_what_is_alive_at_start_is_out_of_later_collections_sight() -> None:
    collections = IdleCollections()
    kept = Node()
    try:
        collections.start()
        assert not gc.is_tracked(kept) or gc.get_freeze_count() > 0
        assert all(o is not kept for o in gc.get_objects())  # frozen: collections do not walk it
    finally:
        gc.unfreeze()


def test_a_worker_collects_when_it_goes_idle(db: Database, http_sink: HttpSink) -> None:
    outbox = Outbox(db, http_sink)
    outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    clock = Clock()

    async def run() -> tuple[int, int]:
        worker = Worker(outbox.settings, db, channel_context(outbox.settings), PEPPER)
        worker.collections = IdleCollections(clock)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, idle=0.01))
        while not http_sink.requests:  # the round that sends, then idle waits
            await asyncio.sleep(0.01)
        before = worker.collections.made
        clock.now += IDLE_EVERY
        for _ in range(200):  # the next time it goes idle
            if worker.collections.made > before:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await worker.context.http.close()
        return before, worker.collections.made

    before, after = asyncio.run(run())
    assert after == before + 1
