"""`browserfleet_event_loop_lag_seconds`: the watcher `settle_heap` starts in a running service's loop records how
late its timer woke, so a loop held by a blocking callback shows up as lag of about that long."""

from __future__ import annotations

import asyncio
import time

from browserfleet_core import runner
from prometheus_client import REGISTRY

NAME = "browserfleet_event_loop_lag_seconds"


def _sample(suffix: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(NAME + suffix, labels or {}) or 0.0


async def test_a_blocked_loop_is_recorded_as_lag() -> None:
    watcher = runner.watch_event_loop(interval=0.02)
    try:
        assert runner.watch_event_loop(interval=0.02) is watcher, "one watcher per loop"
        await asyncio.sleep(0.1)  # a few wakes on an idle loop
        count, total = _sample("_count"), _sample("_sum")
        under = _sample("_bucket", {"le": "0.25"})
        time.sleep(0.3)  # noqa: ASYNC251 (the point: a callback that holds the loop)
        await asyncio.sleep(0.05)
        assert _sample("_count") > count
        assert _sample("_sum") - total >= 0.25
        # the late wake fell past the 0.25 s bucket: the buckets below it did not grow by every new wake
        assert _sample("_bucket", {"le": "0.25"}) - under < _sample("_count") - count
    finally:
        watcher.cancel()
