"""The circuit breaker's states with a clock the test moves: closed until `failures` failures in a row,
open (failing fast, counted) for the cool-down, then one probe at a time whose outcome closes or reopens it;
a cancelled probe hands its turn on. Its state reaches Prometheus when scraped."""

from __future__ import annotations

import pytest
from browserfleet_core.breaker import Breakers, CircuitBreaker, CircuitOpen
from prometheus_client import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sample(name: str, breaker: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"breaker": breaker})


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    b = CircuitBreaker("test-open", failures=3, cooldown_seconds=10, clock=clock)
    for _ in range(2):
        b.check()
        b.failure()
    b.check()
    b.success()  # a success in between starts the count again
    for _ in range(2):
        b.check()
        b.failure()
    assert b.state == "closed"
    b.check()
    b.failure()
    assert b.state == "open" and sample("browserfleet_circuit_breaker_state", "test-open") == 2
    rejected = sample("browserfleet_circuit_breaker_rejected_total", "test-open") or 0
    with pytest.raises(CircuitOpen) as raised:
        b.check()
    assert raised.value.retry_after == 10 and raised.value.failures == 3
    assert "test-open: circuit open after 3 failure(s); retry in 10 s" in str(raised.value)
    assert sample("browserfleet_circuit_breaker_rejected_total", "test-open") == rejected + 1
    assert sample("browserfleet_circuit_breaker_opened_total", "test-open") == 1
    clock.t += 4
    with pytest.raises(CircuitOpen) as raised:
        b.check()
    assert raised.value.retry_after == 6


def test_half_open_lets_one_probe_through_whose_outcome_decides() -> None:
    clock = Clock()
    b = CircuitBreaker("test-probe", failures=1, cooldown_seconds=5, clock=clock)
    b.failure()
    clock.t += 5
    assert b.state == "half_open" and sample("browserfleet_circuit_breaker_state", "test-probe") == 1
    b.check()  # the probe
    with pytest.raises(CircuitOpen):
        b.check()  # everyone else while it is out
    b.failure()  # the probe failed: open for another cool-down
    assert b.state == "open" and b.snapshot().opened_total == 2
    with pytest.raises(CircuitOpen):
        b.check()
    clock.t += 5
    b.check()
    b.success()
    assert b.state == "closed" and b.snapshot().consecutive_failures == 0
    b.check()
    assert sample("browserfleet_circuit_breaker_state", "test-probe") == 0


def test_a_probe_that_never_reports_does_not_hold_the_circuit() -> None:
    clock = Clock()
    b = CircuitBreaker("test-release", failures=1, cooldown_seconds=5, clock=clock)
    b.failure()
    clock.t += 5
    b.check()
    b.release()  # cancelled: the next caller probes
    b.check()
    with pytest.raises(CircuitOpen):
        b.check()
    clock.t += 5  # the probe's turn lapses after one cool-down even without a word
    b.check()


def test_registry_hands_out_one_breaker_per_name_and_snapshots_them() -> None:
    board = Breakers()
    clock = Clock()
    a = board.get("dep-a", failures=1, cooldown_seconds=3, clock=clock)
    assert board.get("dep-a") is a
    a.failure()
    snap = board.snapshot()["dep-a"]
    assert snap.as_dict() == {
        "state": "open",
        "consecutive_failures": 1,
        "retry_after_seconds": 3,
        "opened_total": 1,
    }
