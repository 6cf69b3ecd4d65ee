"""Live task logs: lines a task writes reach the scheduler while it runs, not only with its result.

The steps runner calls `emit()`; whatever shipper the running task installed (a context variable, so
concurrent tasks in one worker never mix lines) numbers the line and sends new lines every
`interval` seconds as `TaskUpdateMessage(kind="log")`. Numbers make the scheduler's store idempotent:
the result message carries every line again, and a line it already has is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable

from browserfleet_contracts.tasks import TaskLogLine

log = logging.getLogger(__name__)

Send = Callable[[list[TaskLogLine], int], Awaitable[None]]

_current: contextvars.ContextVar[LogShipper | None] = contextvars.ContextVar("log_shipper", default=None)


def emit(line: TaskLogLine) -> TaskLogLine:
    """Number `line` and queue it for shipping when a shipper runs in this context; returns the line."""
    shipper = _current.get()
    return shipper.add(line) if shipper is not None else line


class LogShipper:
    def __init__(self, send: Send, *, interval: float = 1.0) -> None:
        self._send = send
        self._interval = interval
        self._lines: list[TaskLogLine] = []
        self._shipped = 0
        self._task: asyncio.Task[None] | None = None
        self._token: contextvars.Token[LogShipper | None] | None = None

    def add(self, line: TaskLogLine) -> TaskLogLine:
        numbered = line.model_copy(update={"seq": len(self._lines)})
        self._lines.append(numbered)
        return numbered

    def number(self, lines: list[TaskLogLine]) -> list[TaskLogLine]:
        """The result's lines with a number each: shipped ones keep theirs, the rest (lines the worker added
        around the run) continue the sequence."""
        return [line if line.seq is not None else self.add(line) for line in lines]

    async def __aenter__(self) -> LogShipper:
        self._token = _current.set(self)
        self._task = asyncio.create_task(self._run(), name="log-shipper")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        end = len(self._lines)
        if end == self._shipped:
            return
        batch = self._lines[self._shipped : end]
        try:
            await self._send(batch, self._shipped)
        except Exception as exc:  # the result carries every line again: a lost batch only arrives later
            log.warning("shipping %d log line(s) failed: %s", len(batch), exc)
            return
        self._shipped = end
