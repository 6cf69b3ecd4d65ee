"""`settle_heap` (what every service calls once started, `wait_for_shutdown` first of all): what exists then
is out of the cyclic collector's reach, and the young generation is collected past YOUNG_COLLECTION objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from browserfleet_core import runner


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_what_a_started_service_holds_is_frozen_and_young_collections_are_rarer(restored_gc: None) -> None:
    gc.unfreeze()
    started = [{"state": i} for i in range(1_000)]  # what start-up built
    runner.settle_heap()
    assert gc.get_freeze_count() >= len(started)
    assert gc.get_threshold()[0] == runner.YOUNG_COLLECTION > 700


async def test_waiting_for_shutdown_settles_the_heap_first(restored_gc: None) -> None:
    import asyncio
    import os
    import signal

    gc.unfreeze()
    gc.set_threshold(700)
    waiting = asyncio.create_task(runner.wait_for_shutdown())
    await asyncio.sleep(0.05)
    assert gc.get_threshold()[0] == runner.YOUNG_COLLECTION and gc.get_freeze_count() > 0
    os.kill(os.getpid(), signal.SIGTERM)  # its own handler: the wait ends, nothing else sees the signal
    await asyncio.wait_for(waiting, 10)


async def test_settling_in_a_running_loop_starts_its_lag_watcher(restored_gc: None) -> None:
    import asyncio

    runner.settle_heap()
    watcher = runner._watchers.get(asyncio.get_running_loop())
    assert watcher is not None and not watcher.done()
    watcher.cancel()
