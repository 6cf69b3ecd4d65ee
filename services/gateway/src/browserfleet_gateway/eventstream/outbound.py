"""A socket's bounded send queue, and what a subscription lets through to it."""

from __future__ import annotations

import asyncio
from collections import deque

from browserfleet_contracts.events import EventType, event_filter_selects

from .messages import Event

# types a wildcard (`task.*`, `*`, or no `types` at all) does not select: a client names them to get them.
# Every batch of every task's log lines would otherwise go to every dashboard of the organization.
OPT_IN_TYPES = frozenset({EventType.TASK_LOG.value})


class SendQueue:
    """Two lanes to one writer: replies (PONG, SUBSCRIBED, ERROR) go first, events after, each lane bounded.
    `offer` never waits (the hub calls it for every socket of an organization in turn) and says False when
    the socket is too far behind; `put` waits for room (a replay goes at the client's pace).

    Lean on purpose, since an idle socket holds one: a lane exists only while it holds something, and the
    writer waits on a plain future rather than an asyncio.Event (each of those carries a deque)."""

    __slots__ = ("_control", "_control_limit", "_events", "_limit", "_reader", "_room")

    def __init__(self, limit: int, control_limit: int = 64) -> None:
        self._control: deque[str] | None = None
        self._events: deque[str] | None = None
        self._limit = limit
        self._control_limit = control_limit
        self._reader: asyncio.Future[None] | None = None  # the writer, waiting for something to send
        self._room: asyncio.Future[None] | None = None  # a replay, waiting for the events lane to drain

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def reply(self, text: str) -> bool:
        if self._control is None:
            self._control = deque()
        elif len(self._control) >= self._control_limit:
            return False
        self._control.append(text)
        self._wake()
        return True

    def offer(self, text: str) -> bool:
        if self._events is None:
            self._events = deque()
        elif len(self._events) >= self._limit:
            return False
        self._events.append(text)
        self._wake()
        return True

    async def put(self, text: str) -> None:
        while len(self) >= self._limit:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.offer(text)

    async def get(self) -> str:
        while not self._control and not self._events:
            self._reader = asyncio.get_running_loop().create_future()
            await self._reader
        self._reader = None
        if self._control:
            text = self._control.popleft()
            if not self._control:
                self._control = None
            return text
        assert self._events is not None
        text = self._events.popleft()
        if not self._events:
            self._events = None
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        return text

    def __len__(self) -> int:
        return len(self._events) if self._events is not None else 0


class TypeFilter:
    """A subscription's `types`. The hub asks it once per event per socket, so each type's answer is kept
    (the platform's event types are a short, closed list)."""

    __slots__ = ("_answers", "_everything", "_filters")

    def __init__(self, types: list[str] | None) -> None:
        self._filters = tuple(types) if types else ()
        self._everything = not types
        self._answers: dict[str, bool] = {}

    def selects(self, event_type: str) -> bool:
        known = self._answers.get(event_type)
        if known is None:
            known = self._decide(event_type)
            if len(self._answers) < 64:
                self._answers[event_type] = known
        return known

    def _decide(self, event_type: str) -> bool:
        if event_type in OPT_IN_TYPES:
            return event_type in self._filters
        if self._everything:
            return True
        return any(event_filter_selects(f, event_type) for f in self._filters)


def selects(types: TypeFilter, task_id: str | None, event: Event) -> bool:
    return types.selects(event.type) and (task_id is None or event.task_id == task_id)
