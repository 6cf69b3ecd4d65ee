"""The dev stack's supervisor: a crashed service, worker or embedded server is started again, with backoff,
and the log says so; after repeated crashes it gives up with a message saying which and why.

What it watches are `Unit`s: anything that can say whether it is alive, how it ended, and start again. The
dev stack (devstack.Platform) gives it each service process, NATS and PostgreSQL. It is a thread of the
launcher: the services are separate processes, so nothing here blocks them; a restart happens on this
thread, so one slow restart (PostgreSQL replaying its log) delays the others' by that long, no more.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol


class Unit(Protocol):
    name: str

    def alive(self) -> bool: ...

    def describe_exit(self) -> str:
        """How it ended, for the log ("exit code 1", "killed by signal 9")."""
        ...

    def restart(self) -> None:
        """Start it again; raises when it cannot (that counts as another crash)."""
        ...


@dataclass(frozen=True)
class CrashPolicy:
    """`max_crashes` within `window_seconds` and the unit is given up; the n-th crash in the window waits
    `backoff[n-1]` seconds (the last value beyond) before the restart, so a unit that crashes at once on
    every start does not spin the CPU while it uses up its allowance."""

    max_crashes: int = 5
    window_seconds: float = 60.0
    backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

    def delay(self, crashes: int) -> float:
        return self.backoff[min(crashes, len(self.backoff)) - 1]


@dataclass
class Restart:
    """One crash and what became of it: `restarted_at` is None while waiting, or when the unit was given up."""

    unit: str
    crashed_at: float  # time.time()
    how: str
    restarted_at: float | None = None


@dataclass
class _Watch:
    unit: Unit
    crashes: deque[float] = field(default_factory=deque)  # monotonic times within the window
    due: float | None = None  # monotonic time of the pending restart
    record: Restart | None = None


class Supervisor:
    def __init__(
        self,
        units: Callable[[], Iterable[Unit]],
        emit: Callable[[str], None],
        policy: CrashPolicy | None = None,
        *,
        interval: float = 0.2,
    ) -> None:
        """`units` is asked on every round, so units added later (a worker joining) are watched too."""
        self._units = units
        self._emit = emit
        self.policy = policy or CrashPolicy()
        self.interval = interval
        self.history: list[Restart] = []
        self.gave_up: str | None = None
        self.failed = threading.Event()  # set with `gave_up`: the launcher stops the platform
        self._watches: dict[int, _Watch] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="devstack-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Before a deliberate stop: from here on an exit is not a crash."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One round: notice the dead, restart those whose backoff is over."""
        now = time.monotonic()
        for unit in list(self._units()):
            if self._stop.is_set() or self.gave_up is not None:
                return
            watch = self._watches.setdefault(id(unit), _Watch(unit))
            if watch.due is None:
                if not unit.alive():
                    self._crashed(watch, now, unit.describe_exit())
            elif now >= watch.due:
                self._restart(watch)

    def _crashed(self, watch: _Watch, now: float, how: str) -> None:
        window = self.policy.window_seconds
        while watch.crashes and now - watch.crashes[0] > window:
            watch.crashes.popleft()
        watch.crashes.append(now)
        n = len(watch.crashes)
        record = Restart(watch.unit.name, time.time(), how)
        self.history.append(record)
        if n >= self.policy.max_crashes:
            self.gave_up = (
                f"{watch.unit.name} crashed {n} times within {window:.0f} s (last: {how}); giving up on it. "
                f"Its log lines above say why; fix that and start again."
            )
            self._emit(self.gave_up)
            self.failed.set()
            return
        delay = self.policy.delay(n)
        watch.due, watch.record = now + delay, record
        self._emit(
            f"{watch.unit.name} stopped unexpectedly ({how}); restarting in {delay:.1f} s "
            f"(crash {n} of {self.policy.max_crashes} allowed within {window:.0f} s)"
        )

    def _restart(self, watch: _Watch) -> None:
        unit = watch.unit
        watch.due = None
        try:
            unit.restart()
        except Exception as exc:  # any failure to start is one more crash, told in the log
            self._crashed(watch, time.monotonic(), f"restart failed: {exc}")
            return
        if watch.record is not None:
            watch.record.restarted_at = time.time()
            took = watch.record.restarted_at - watch.record.crashed_at
            # started, not yet necessarily serving: its own lines say when it is
            self._emit(f"{unit.name} started again ({took:.1f} s after it stopped)")
        watch.record = None
