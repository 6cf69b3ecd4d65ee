"""A task's browser profile: lease it from the vault (waiting, bounded, while another task holds it), load
its storage state into the task's context, and save it back after success (or just end the lease). The
state travels sealed both ways (unsealing.py): these calls carry boxes, never a state in clear."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from browserfleet_contracts import endpoints
from browserfleet_contracts.profiles import (
    ProfileAcquireRequest,
    ProfileLease,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from browserfleet_contracts.sealed import SealedBox
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.25
MAX_POLL_SECONDS = 2.0


class ProfileUnavailable(Exception):
    """The profile could not be leased (refused, or held by another task past the wait); fails the task."""


class ProfileCancelled(Exception):
    """The task was cancelled while it waited for the profile."""


async def acquire(
    rpc: RpcClient,
    *,
    task_id: str,
    worker_key: str,
    profile: str,
    wait_seconds: float,
    cancelled: asyncio.Event,
    attempt: int | None = None,
    public_key: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ProfileLease, float]:
    """The lease (its state still sealed) and how long it took; polls with backoff while another task
    holds the profile."""
    started = clock()
    delay = FIRST_POLL_SECONDS
    request = ProfileAcquireRequest(
        task_id=task_id, worker_key=worker_key, profile=profile, attempt=attempt, public_key=public_key
    )
    while True:
        try:
            lease: ProfileLease = await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, request)
        except ServiceError as exc:
            raise ProfileUnavailable(f"profile {profile} not loaded: {exc.message}") from None
        if lease.granted:
            return lease, clock() - started
        waited = clock() - started
        if waited + delay > wait_seconds:
            until = lease.expires_at.isoformat() if lease.expires_at else "unknown"
            raise ProfileUnavailable(
                f"profile {profile} is in use by task {lease.held_by_task} (lease until {until}); "
                f"gave up after waiting {waited:.0f} s (PROFILE_WAIT_SECONDS={wait_seconds:g})"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancelled.wait(), delay)
        if cancelled.is_set():
            raise ProfileCancelled(profile)
        delay = min(delay * 2, MAX_POLL_SECONDS)


async def save(
    rpc: RpcClient,
    *,
    task_id: str,
    worker_key: str,
    lease: ProfileLease,
    sealed_state: SealedBox | None,
    attempt: int | None = None,
) -> ProfileSaveReply:
    """Stores the sealed state and ends the lease; `sealed_state=None` only ends it. Raises ServiceError on
    refusal."""
    assert lease.lease_token is not None
    request = ProfileSaveRequest(
        task_id=task_id,
        worker_key=worker_key,
        profile=lease.profile,
        lease_token=lease.lease_token,
        attempt=attempt,
        sealed_state=sealed_state,
    )
    reply: ProfileSaveReply = await rpc.call(endpoints.Vault.PROFILE_SAVE, request)
    return reply


async def release_quietly(rpc: RpcClient, *, task_id: str, worker_key: str, lease: ProfileLease) -> None:
    """Ends the lease without saving; a failure only means the next task waits for the lease to expire."""
    try:
        await asyncio.wait_for(
            save(rpc, task_id=task_id, worker_key=worker_key, lease=lease, sealed_state=None), 10
        )
    except Exception as exc:  # best effort: the lease expires by itself
        log.warning("ending the lease on profile %s failed (%s); it will expire", lease.profile, exc)
