"""Brute force on sign-in, counted in Postgres so every replica sees the same failures: per account
(`email:<address>`) and per client address (`ip:<address>`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from browserfleet_core.db import AsyncSession
from browserfleet_core.errors import RateLimited

from . import repository as repo
from .models import LoginThrottle


class LoginThrottled(RateLimited):
    """Too many failed sign-ins for this account or this address: wait `retry_after` seconds. Says nothing
    about which one, nor whether the account exists."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed sign-ins; try again later", code="login_throttled")
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(frozen=True)
class BruteForcePolicy:
    """Failed sign-ins per account and per client address: after `slow_after` failures each further
    attempt must wait twice as long as the previous one (up to `max_delay_seconds`); after `lock_after_*`
    failures the key is locked for `lock_seconds`. Failures older than `window_seconds` are forgotten."""

    slow_after: int = 3
    max_delay_seconds: float = 30.0
    lock_after_account: int = 10
    lock_after_ip: int = 50
    lock_seconds: float = 900.0
    window_seconds: float = 900.0

    def wait_seconds(self, row: LoginThrottle, now: datetime) -> float:
        if row.locked_until is not None and row.locked_until > now:
            return (row.locked_until - now).total_seconds()
        if (now - row.last_failure_at).total_seconds() > self.window_seconds:
            return 0.0
        if row.failures < self.slow_after:
            return 0.0
        delay = min(self.max_delay_seconds, float(2 ** (row.failures - self.slow_after)))
        return max(0.0, delay - (now - row.last_failure_at).total_seconds())


def throttle_keys(email: str, client_ip: str | None) -> list[str]:
    """The account's key first (a success clears it), then the address's (a success from an address that
    guessed other accounts does not clear it)."""
    return [f"email:{email}"] + ([f"ip:{client_ip}"] if client_ip else [])


async def wait_seconds(
    session: AsyncSession, policy: BruteForcePolicy, keys: list[str], now: datetime
) -> float:
    """How long this sign-in must still wait; the keys' rows stay locked until the transaction ends."""
    throttles = await repo.get_throttles_for_update(session, keys)
    return max((policy.wait_seconds(t, now) for t in throttles.values()), default=0.0)


async def record_failure(
    session: AsyncSession, policy: BruteForcePolicy, keys: list[str], now: datetime
) -> None:
    for key in keys:
        await repo.add_login_failure(
            session,
            key,
            now,
            window_start=now - timedelta(seconds=policy.window_seconds),
            lock_after=policy.lock_after_ip if key.startswith("ip:") else policy.lock_after_account,
            locked_until=now + timedelta(seconds=policy.lock_seconds),
        )


async def clear_account(session: AsyncSession, keys: list[str]) -> None:
    await repo.clear_throttle(session, keys[0])
