"""What an attempt's answer means: success or the next attempt's time, Retry-After, and when an endpoint is
disabled. Pure functions of the answer, the settings' schedule and the clock.

The schedule is Svix's (WEBHOOK_RETRY_SCHEDULE, default 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h): the
n-th number is the wait before attempt n, so a delivery is tried len(schedule) times over about 27 h before it
is `dead`. Each wait is stretched by up to 10 % so that endpoints that failed together do not retry together.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .models import DEAD, FAILED, SUCCEEDED

JITTER = 0.1
GONE = 410


def first_attempt_at(schedule: Sequence[float], now: datetime) -> datetime:
    return now + timedelta(seconds=schedule[0])


def is_success(status_code: int | None) -> bool:
    """Only a 2xx is a success; a 3xx is a failure (redirects are never followed)."""
    return status_code is not None and 200 <= status_code < 300


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Outcome:
    status: str
    next_attempt_at: datetime | None


def outcome(
    *,
    cycle_attempt: int,
    status_code: int | None,
    retry_after: float | None,
    schedule: Sequence[float],
    retry_after_max: float,
    now: datetime,
    rng: random.Random | None = None,
) -> Outcome:
    """The delivery's state after attempt `cycle_attempt` (1-based, within the current schedule) answered
    `status_code` (None: no answer). A receiver's Retry-After is honoured (capped at `retry_after_max`) when
    it asks for longer than the schedule would wait."""
    if is_success(status_code):
        return Outcome(SUCCEEDED, None)
    if cycle_attempt >= len(schedule):
        return Outcome(DEAD, None)
    wait = schedule[cycle_attempt] * (1 + (rng or random).uniform(0, JITTER))
    if retry_after is not None:
        wait = max(wait, min(retry_after, retry_after_max))
    return Outcome(FAILED, now + timedelta(seconds=wait))


def disable_reason(
    *, status_code: int | None, failing_since: datetime | None, now: datetime, window_seconds: float
) -> str | None:
    """Why an endpoint must be disabled after a failed attempt, if it must: `gone` (it answered 410) or
    `failing` (every attempt has failed since `failing_since`, for the whole window)."""
    if status_code == GONE:
        return "gone"
    if failing_since is not None and now - failing_since >= timedelta(seconds=window_seconds):
        return "failing"
    return None
