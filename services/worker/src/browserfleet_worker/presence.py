"""The worker towards the worker-gateway: who it is (a worker key given, saved, or traded for an invite code at
registration, with its device info), its X25519 key pair (made at every start: the public key goes to
worker-gateway, which hands it to the vault to seal releases to; the private key never leaves this process),
that it is alive (heartbeats with its load; the reply may ask it to drain), what state it is in, and its
departure (a pool replica's identity, which nothing saved, is removed on a clean shutdown).

Why the private key is never written: every start sends a fresh public key (`svc.workers.rotate_key`, or the
registration itself), so a key pair is only ever needed by the process that made it; a restart makes another.
Nothing on disk can leak it, and a pool replica, which has no disk of its own, needs no other rule."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from browserfleet_contracts import endpoints
from browserfleet_contracts.workers import (
    DeregisterRequest,
    DeviceInfo,
    Heartbeat,
    HeartbeatReply,
    RegisterReply,
    RegisterRequest,
    ReportedStatus,
    RotateKeyRequest,
    WorkerAuthRequest,
    WorkerIdentity,
    WorkerStatusRequest,
)
from browserfleet_core.errors import ServiceError, Unauthorized, Unavailable
from browserfleet_core.messaging import RpcClient
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FILE = "worker.json"
# A registration waits this long for its reply (at least RPC_TIMEOUT_SECONDS). It happens once per start, and
# under load the first call is slow: a reply that comes after the timeout is a repeat (same invite, same key)
# that worker-gateway must recognise, where waiting a little longer would have had the answer.
REGISTER_TIMEOUT_SECONDS = 30.0


@dataclass
class Identity:
    worker_key: str
    worker_id: str | None
    pool: str
    # this process's X25519 key pair (its public half is registered); opens what the vault seals to it
    private_key: X25519PrivateKey | None = field(default=None, compare=False, repr=False)
    # registered by this process and saved nowhere (a pool replica): removed again on a clean shutdown
    ephemeral: bool = field(default=False, compare=False)


def new_key_pair() -> tuple[X25519PrivateKey, str]:
    """A fresh X25519 key pair: the private key, and the public key as base64url (what is registered)."""
    private = X25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, base64.urlsafe_b64encode(raw).decode().rstrip("=")


def device_info() -> DeviceInfo:
    """The seed's device_info: what admins see next to the worker."""
    return DeviceInfo(hostname=socket.gethostname()[:255], platform=sys.platform, version=_version())


class WorkerConfigError(RuntimeError):
    pass


def load_identity(state_dir: Path) -> Identity | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Identity(worker_key=data["worker_key"], worker_id=data.get("worker_id"), pool=data["pool"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkerConfigError(
            f"{path} is not a saved worker identity; remove it and register again"
        ) from exc


def save_identity(state_dir: Path, identity: Identity) -> Path:
    """Written 0600 from the first byte (the key is a credential) and renamed into place atomically."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {"worker_key": identity.worker_key, "worker_id": identity.worker_id, "pool": identity.pool}, fh
        )
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


async def obtain_identity(settings: WorkerSettings, rpc: RpcClient, stop: asyncio.Event) -> Identity:
    """WORKER_KEY, else the key saved in WORKER_STATE_DIR, else trade WORKER_INVITE_CODE for one. Either way
    this start's public key is registered, and the pool comes from worker-gateway."""
    identity: Identity | None = None
    if settings.worker_key:
        identity = Identity(settings.worker_key, None, settings.pool)
    elif settings.worker_state_dir is not None:
        identity = load_identity(settings.worker_state_dir)
    if identity is None:
        if not settings.worker_invite_code:
            raise WorkerConfigError(
                "no worker key: set WORKER_KEY, or WORKER_INVITE_CODE (a pool invite gives each replica an "
                "identity of its own; with WORKER_STATE_DIR a one-time invite's key is kept for restarts)"
            )
        identity = await _register(settings, rpc, stop)
    else:
        await _rotate(identity, rpc, stop)
    if "pool" in settings.model_fields_set and settings.pool != identity.pool:
        # an explicit POOL beats what registration said (the bus lets a worker pull its own pool only)
        log.warning("POOL=%s overrides the registered pool %s", settings.pool, identity.pool)
        identity.pool = settings.pool
    return identity


async def _patiently(rpc_call: Callable[[], Awaitable[T]], what: str, stop: asyncio.Event) -> T:
    """`rpc_call` until worker-gateway answers (in `make dev` the worker may start first); a refusal is the
    operator's to fix, said in one line."""
    delay = 1.0
    while True:
        try:
            return await rpc_call()
        except Unavailable as exc:
            log.warning("cannot %s yet (%s); retrying in %.0f s", what, exc.message, delay)
        except ServiceError as exc:
            raise WorkerConfigError(f"{what} refused: {exc.message}") from exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise WorkerConfigError(f"stopped before it could {what}")
        delay = min(delay * 2, 15.0)


async def _register(settings: WorkerSettings, rpc: RpcClient, stop: asyncio.Event) -> Identity:
    # ONE request (one key pair), sent again as it is: worker-gateway answers a repeated registration (the first
    # one's reply lost or late) with the worker it made only when the invite and the public key are the same;
    # a new key pair per try would be a second registration, which a used one-time invite refuses
    private, public = new_key_pair()
    request = RegisterRequest(
        invite_code=settings.worker_invite_code or "",
        name=settings.worker_name,
        tags=settings.worker_tags,
        version=_version(),
        device_info=device_info(),
        public_key=public,
    )
    timeout = max(settings.rpc_timeout_seconds, REGISTER_TIMEOUT_SECONDS)
    reply: RegisterReply = await _patiently(
        lambda: rpc.call(endpoints.Workers.REGISTER, request, timeout=timeout), "register", stop
    )
    identity = Identity(reply.worker_key, reply.worker_id, reply.pool, private_key=private)
    if settings.worker_state_dir is not None:
        path = save_identity(settings.worker_state_dir, identity)
        log.info("registered as worker %s in pool %s; key saved to %s", reply.worker_id, reply.pool, path)
    else:
        # a pool replica: an identity for this run only, removed again on a clean shutdown
        identity.ephemeral = True
        log.info("registered as worker %s in pool %s for this run", reply.worker_id, reply.pool)
    return identity


async def _rotate(identity: Identity, rpc: RpcClient, stop: asyncio.Event) -> None:
    """A known worker's new key pair for this start; worker-gateway also says its id and pool."""
    private, public = new_key_pair()
    request = RotateKeyRequest(worker_key=identity.worker_key, public_key=public, device_info=device_info())
    who: WorkerIdentity = await _patiently(
        lambda: rpc.call(endpoints.Workers.ROTATE_KEY, request), "announce its public key", stop
    )
    identity.private_key = private
    identity.worker_id, identity.pool = who.worker_id, who.pool


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("browserfleet-worker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return None


async def resolve_worker_id(rpc: RpcClient, identity: Identity) -> str | None:
    """The worker's id, asked of the worker-gateway when it started with WORKER_KEY; None if it cannot say."""
    if identity.worker_id is None:
        try:
            who: WorkerIdentity = await rpc.call(
                endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=identity.worker_key)
            )
        except ServiceError as exc:
            log.warning("worker id unknown (%s): drain by SIGUSR1 only", exc.message)
            return None
        identity.worker_id = who.worker_id
    return identity.worker_id


async def heartbeat_loop(
    rpc: RpcClient,
    identity: Identity,
    settings: WorkerSettings,
    running: Callable[[], int],
    stop: asyncio.Event,
    *,
    on_drain: Callable[[], None] | None = None,
    on_removed: Callable[[], None] | None = None,
) -> None:
    """Beats every `heartbeat_seconds` until `stop`, with the number of `running` tasks. A reply asking for a
    drain calls `on_drain` (an admin's drain reaches a worker that missed `workers.drain.<id>`); a key
    refused as removed calls `on_removed` (an admin removed this worker: it must stop)."""
    failing = False
    while not stop.is_set():
        busy = running()
        beat = Heartbeat(
            worker_key=identity.worker_key,
            busy=busy >= settings.worker_slots,
            running_tasks=busy,
            slots=settings.worker_slots,
        )
        try:
            reply: HeartbeatReply = await rpc.call(
                endpoints.Workers.HEARTBEAT,
                beat,
                timeout=min(settings.rpc_timeout_seconds, settings.heartbeat_seconds),
            )
            if failing:
                log.info("heartbeats are answered again")
            failing = False
            if reply.drain and on_drain is not None:
                on_drain()
        except ServiceError as exc:
            if exc.status == Unauthorized.status and on_removed is not None:
                log.error("worker-gateway refuses this worker's key (%s): stopping", exc.message)
                on_removed()
                return
            # the worker-gateway being down must not stop task work; say so once, not every beat
            if not failing:
                log.warning("heartbeat failed: %s; will keep trying", exc.message)
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.heartbeat_seconds)


async def report_status(
    rpc: RpcClient, identity: Identity, status: ReportedStatus, detail: str | None = None
) -> None:
    """The worker's own word on its state (draining, error, offline...); best effort: presence goes on
    with heartbeats whether or not this is heard."""
    if identity.worker_id is None:
        return
    request = WorkerStatusRequest(
        worker_key=identity.worker_key, worker_id=identity.worker_id, status=status, detail=detail
    )
    try:
        await rpc.call(endpoints.Workers.STATUS, request)
    except ServiceError as exc:
        log.warning("reporting status %s failed: %s", status, exc.message)


async def leave(rpc: RpcClient, identity: Identity) -> None:
    """A clean shutdown: a pool replica's identity (saved nowhere) is removed; a worker that keeps its key
    says it is offline now, rather than after the silence."""
    if identity.worker_id is None:
        return
    if not identity.ephemeral:
        await report_status(rpc, identity, "offline", "stopped")
        return
    try:
        await rpc.call(
            endpoints.Workers.DEREGISTER,
            DeregisterRequest(worker_key=identity.worker_key, worker_id=identity.worker_id),
        )
        log.info("deregistered worker %s", identity.worker_id)
    except ServiceError as exc:
        log.warning(
            "deregistering failed (%s); an admin may remove worker %s", exc.message, identity.worker_id
        )
