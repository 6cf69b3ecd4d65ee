"""Waiting in a test for something another process or task does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, cap: float = 60.0) -> T:
    """What `probe` returns once it is truthy, polled every 50 ms; AssertionError naming `what` after `cap`
    seconds (hang protection only: `cap` is not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)
