"""Circuit breakers for dependencies that fail slowly (a service that stopped answering, an LLM endpoint
that times out): after `failures` failures in a row the circuit opens and calls fail at once for
`cooldown_seconds`, instead of each waiting out its own timeout and piling up behind the others. Then one
call is let through as a probe (half-open): its success closes the circuit, its failure opens it again for
another cool-down. Calls that arrive while the probe is out fail fast too.

    breaker = breakers.get("llm:api.openai.com", failures=5, cooldown_seconds=30)
    breaker.check()            # raises CircuitOpen(retry_after) while open (or while the probe is out)
    try:
        answer = await call()
    except Unreachable:
        breaker.failure()
        raise
    breaker.success()

What counts as a failure is the caller's choice (a timeout or an unreachable host, never a 4xx: a
dependency that answers "no" is up). A call that ends neither way (cancelled) calls `release()`, so a probe
that never reports does not hold the circuit half-open: the probe's turn also lapses after one cool-down.

Every breaker of a process is in `breakers` (its `snapshot()` is what a health endpoint shows) and in
Prometheus: `browserfleet_circuit_breaker_state{breaker}` (0 closed, 1 half-open, 2 open, read when scraped),
`browserfleet_circuit_breaker_opened_total{breaker}` and `browserfleet_circuit_breaker_rejected_total{breaker}`
(calls failed fast).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Literal, TypedDict, Unpack

from prometheus_client import Counter, Gauge

State = Literal["closed", "half_open", "open"]
_STATE_VALUE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}

STATE = Gauge(
    "browserfleet_circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open (a probe may pass), 2 open (failing fast)",
    ["breaker"],
)
OPENED = Counter(
    "browserfleet_circuit_breaker_opened_total",
    "Times a dependency's circuit opened (after consecutive failures, or a failed probe)",
    ["breaker"],
)
REJECTED = Counter(
    "browserfleet_circuit_breaker_rejected_total",
    "Calls failed fast because the dependency's circuit was open (or its probe was out)",
    ["breaker"],
)


class CircuitOpen(Exception):
    """The dependency's circuit is open: the call was not made. `retry_after`: seconds until a probe may
    pass (at least 1)."""

    def __init__(self, name: str, retry_after: float, failures: int) -> None:
        self.name = name
        self.retry_after = max(1, math.ceil(retry_after))
        self.failures = failures
        super().__init__(f"{name}: circuit open after {failures} failure(s); retry in {self.retry_after} s")


@dataclass(frozen=True)
class Snapshot:
    """A breaker as a health endpoint shows it."""

    name: str
    state: State
    consecutive_failures: int
    retry_after_seconds: int
    opened_total: int

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "retry_after_seconds": self.retry_after_seconds,
            "opened_total": self.opened_total,
        }


class Settings(TypedDict, total=False):
    """A breaker's settings, as `Breakers.get` passes them on to `CircuitBreaker`."""

    failures: int
    cooldown_seconds: float
    clock: Callable[[], float]


@dataclass(eq=False)
class CircuitBreaker:
    name: str
    _: KW_ONLY
    failures: int = 5
    cooldown_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown_seconds <= 0:
            raise ValueError("a breaker needs failures >= 1 and a positive cool-down")
        self._lock = threading.Lock()  # the worker's agent runs its LLM calls from more than one thread
        self._consecutive = 0
        self._open_until: float | None = None
        self._probe_since: float | None = None  # half-open: when the probe was let through
        self._opened_total = 0
        STATE.labels(self.name).set_function(lambda: _STATE_VALUE[self.state])

    @property
    def state(self) -> State:
        if self._open_until is None:
            return "closed"
        if self.clock() < self._open_until:
            return "open"
        return "half_open"

    def retry_after(self) -> float:
        """Seconds until a call may pass: 0 when closed or when a probe may go now."""
        now = self.clock()
        if self._open_until is None:
            return 0.0
        if now < self._open_until:
            return self._open_until - now
        if self._probe_since is not None and now - self._probe_since < self.cooldown_seconds:
            return self._probe_since + self.cooldown_seconds - now
        return 0.0

    def check(self) -> None:
        """Let the call through, or raise `CircuitOpen`. In half-open state the first caller becomes the probe."""
        with self._lock:
            if self._open_until is None:
                return
            now = self.clock()
            wait = self.retry_after()
            if wait <= 0 and now >= self._open_until:
                self._probe_since = now
                return
        REJECTED.labels(self.name).inc()
        raise CircuitOpen(self.name, wait, self._consecutive)

    def success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._open_until = None
            self._probe_since = None

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            now = self.clock()
            was_open = self._open_until is not None and now < self._open_until
            # a failed probe (half-open) opens it again at once; a late failure of a call let through before
            # it opened only extends the cool-down
            if self._open_until is not None or self._consecutive >= self.failures:
                self._open_until = now + self.cooldown_seconds
                self._probe_since = None
                if not was_open:
                    self._opened_total += 1
                    OPENED.labels(self.name).inc()

    def release(self) -> None:
        """The call ended without telling (cancelled): a probe's turn passes to the next caller."""
        with self._lock:
            self._probe_since = None

    def snapshot(self) -> Snapshot:
        return Snapshot(
            name=self.name,
            state=self.state,
            consecutive_failures=self._consecutive,
            retry_after_seconds=math.ceil(self.retry_after()),
            opened_total=self._opened_total,
        )


class Breakers:
    """The process's breakers by name: one per dependency, shared by every caller of it."""

    def __init__(self) -> None:
        self._all: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **settings: Unpack[Settings]) -> CircuitBreaker:
        """The breaker called `name`, made with these settings the first time it is asked for."""
        with self._lock:
            found = self._all.get(name)
            if found is None:
                found = self._all[name] = CircuitBreaker(name, **settings)
            return found

    def replace(self, breaker: CircuitBreaker) -> None:
        """Put `breaker` in place of any of its name (a test's, with its own clock)."""
        with self._lock:
            self._all[breaker.name] = breaker

    def snapshot(self) -> dict[str, Snapshot]:
        """Every breaker's state, for a health endpoint (`browserfleet_core.breaker.breakers.snapshot()`)."""
        with self._lock:
            found = list(self._all.values())
        return {b.name: b.snapshot() for b in found}


breakers = Breakers()
