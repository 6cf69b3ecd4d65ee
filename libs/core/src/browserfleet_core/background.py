"""Fire-and-forget work that runs to its end: the event loop holds a task only weakly, so a task nobody
references may be collected before it finished. What runs here is held until it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

_RUNNING: set[asyncio.Future[Any]] = set()


def run_in_background(aw: Awaitable[Any]) -> None:
    """Runs `aw` on the current loop without waiting for it (its failure is the loop's to log)."""
    task = asyncio.ensure_future(aw)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
