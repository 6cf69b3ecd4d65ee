"""The worker as a remote worker: no NATS, only the platform's URL (`browserfleet-worker --gateway URL
--invite CODE`, or GATEWAY_URL; docs/websocket.md "Remote workers", README "Run a worker on your own
machine").

It registers over HTTP with its invite (`POST /workers/register`, with its device info and this start's
X25519 public key) and keeps the key in its state folder (`worker.json`, 0600; ~/.browserfleet/worker unless
WORKER_STATE_DIR says otherwise), then holds one WebSocket to `/workers/ws` (socketlink.py). worker-gateway's
bridge pulls, claims and leases tasks for it on the bus as this worker, so the task rules are an in-cluster
worker's: each TASK_ASSIGNED runs through the same code (remote_attempt.py -> execution.execute), secrets
arrive sealed to this process's key, a drain or cancel arrives as a frame, and a socket that dies keeps the
running tasks alive for as long as their lease lasts.

Like the in-cluster worker, the private half of the key pair is made at every start and never written: the
WORKER_CONNECT of a new process carries its new public key, which replaces the registered one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path

import httpx
from browserfleet_contracts.worker_socket import (
    Cancel,
    Connected,
    Drain,
    Drained,
    HeartbeatFrame,
    HeldTask,
    Ready,
    TaskAssigned,
)
from browserfleet_contracts.workers import HeartbeatReply, RegisterReply, RegisterRequest
from browserfleet_core.errors import ServiceError
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ValidationError

from . import presence
from .browser import BrowserHost
from .orgpolicy import OrgPolicies
from .presence import (
    STATE_FILE,
    Identity,
    WorkerConfigError,
    device_info,
    load_identity,
    new_key_pair,
    save_identity,
)
from .remote_attempt import RemoteAttempt, hand_back, run_remote_attempt
from .runtime import WorkerRuntime
from .secret_values import MaskRegistry
from .settings import WorkerSettings
from .socketlink import SocketJetStream, SocketLink, SocketRpc, socket_url

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path.home() / ".browserfleet" / "worker"
LEAVE_TIMEOUT_SECONDS = 5.0


def state_dir(settings: WorkerSettings) -> Path:
    return settings.worker_state_dir or DEFAULT_STATE_DIR


async def remote_identity(settings: WorkerSettings, stop: asyncio.Event) -> tuple[Identity, str]:
    """WORKER_KEY, else the saved key, else one registered over HTTP with the invite (and saved, 0600); with
    this start's key pair. Returns the identity and its public key."""
    assert settings.gateway_url is not None
    private, public = new_key_pair()
    if settings.worker_key:
        return Identity(settings.worker_key, None, settings.pool, private_key=private), public
    folder = state_dir(settings)
    saved = load_identity(folder)
    if saved is not None:
        saved.private_key = private
        log.info("using the worker key saved in %s", folder)
        return saved, public
    if not settings.worker_invite_code:
        raise WorkerConfigError(
            f"no worker key in {folder}: join with an invite (--invite CODE or WORKER_INVITE_CODE)"
        )
    request = RegisterRequest(
        invite_code=settings.worker_invite_code,
        name=settings.worker_name,
        tags=settings.worker_tags,
        version=presence.device_info().version,
        device_info=device_info(),
        public_key=public,
    )
    reply = await _register(settings.gateway_url, request, stop)
    identity = Identity(reply.worker_key, reply.worker_id, reply.pool, private_key=private)
    path = save_identity(folder, identity)
    log.info("registered as worker %s in pool %s; key saved to %s", reply.worker_id, reply.pool_name, path)
    return identity, public


async def _register(gateway_url: str, request: RegisterRequest, stop: asyncio.Event) -> RegisterReply:
    """POST /workers/register until the gateway answers; a refusal (a bad or used invite) is final."""
    url = gateway_url.rstrip("/") + "/workers/register"
    delay = 1.0
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            try:
                resp = await http.post(
                    url,
                    content=request.model_dump_json(exclude_none=True),
                    headers={"Content-Type": "application/json"},
                )
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        raise WorkerConfigError(
                            f"registration refused ({resp.status_code}): {_message(resp)}"
                        )
                    return RegisterReply.model_validate_json(resp.content)
                problem = f"{resp.status_code} {_message(resp)}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning("cannot register at %s yet (%s); retrying in %.0f s", url, problem, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise WorkerConfigError("stopped before it could register")
            delay = min(delay * 2, 15.0)


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("message") or body.get("detail") or body)
    except ValueError:
        return resp.text[:200]


class RemoteWorker:
    def __init__(
        self, settings: WorkerSettings, browser: BrowserHost, identity: Identity, public_key: str
    ) -> None:
        assert settings.gateway_url is not None
        self.settings = settings
        self.identity = identity
        self.attempts: dict[str, RemoteAttempt] = {}
        self.runs: dict[str, asyncio.Task[None]] = {}
        self.draining = False
        self.link = SocketLink(
            socket_url(settings.gateway_url),
            identity.worker_key,
            public_key=public_key,
            device_info=device_info(),
            slots=self._slots,
            held=self._held,
            on_frame=self._on_frame,
        )
        rpc = SocketRpc(self.link, timeout=settings.rpc_timeout_seconds)
        self.rt = WorkerRuntime(
            settings=settings,
            nc=NatsClient(),  # never connected: a remote worker has no bus
            js=SocketJetStream(self.link, settings.rpc_timeout_seconds),
            browser=browser,
            identity=identity,
            rpc=rpc,
            masks=MaskRegistry(),
            org_policies=OrgPolicies(rpc, identity.worker_key, ttl_seconds=settings.org_policy_cache_seconds),
        )
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        link = asyncio.create_task(self.link.run(), name="socket")
        beats = asyncio.create_task(self._heartbeats(stop), name="heartbeats")
        try:
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self.link.stopped.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        finally:
            self.draining = True
            await self.link.send_quietly(Ready(type="READY", slots=0))
            await self._settle(self.settings.shutdown_grace_seconds)
            beats.cancel()
            if self.link.connected.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(presence.leave(self.rt.rpc, self.identity), LEAVE_TIMEOUT_SECONDS)
            await self.link.close()
            await asyncio.gather(link, beats, *self._background, return_exceptions=True)
        if self.link.refused is not None:
            saved = "" if self.settings.worker_key else f" (remove {state_dir(self.settings) / STATE_FILE}"
            raise WorkerConfigError(
                f"the platform refused this worker's key: {self.link.refused}; join again with a new invite"
                + (f"{saved} first)" if saved else "")
            )

    def request_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("drain requested: no new tasks; %d running", len(self.runs))
        self._spawn(self._drain())

    # --- what the link asks of us ----------------------------------------------------------------------
    def _slots(self) -> int:
        return 0 if self.draining else self.settings.worker_slots

    def _held(self) -> list[HeldTask]:
        return [a.held() for a in self.attempts.values() if not a.finished]

    async def _on_frame(self, frame: BaseModel) -> None:
        if isinstance(frame, TaskAssigned):
            self._assigned(frame)
        elif isinstance(frame, Cancel):
            attempt = self.attempts.get(frame.task_id)
            if attempt is not None and frame.attempt in (None, attempt.attempt):
                log.info("task %s cancelled: %s", frame.task_id, frame.reason)
                attempt.cancelled.set()
        elif isinstance(frame, Drain):
            self.request_drain()
        elif isinstance(frame, Connected):
            self.identity.worker_id = frame.worker_id
            self.identity.pool = frame.pool
            for lost in frame.lost:
                attempt = self.attempts.get(lost.task_id)
                if attempt is not None and attempt.attempt == lost.attempt:
                    log.warning("task %s is no longer this worker's: %s", lost.task_id, lost.reason)
                    attempt.lost.set()
                    attempt.cancelled.set()
            if self.draining:
                await self.link.send_quietly(Ready(type="READY", slots=0))

    def _assigned(self, frame: TaskAssigned) -> None:
        attempt = RemoteAttempt(frame)
        self.attempts[frame.task_id] = attempt
        if self.draining:  # crossed our READY 0 on the way: give it back at once
            self._spawn(self._give_back(attempt))
            return
        run = asyncio.get_running_loop().create_task(
            run_remote_attempt(self.rt, self.link, attempt), name=f"task-{frame.task_id}"
        )
        self.runs[frame.task_id] = run
        run.add_done_callback(lambda _t: self._ended(attempt))

    def _ended(self, attempt: RemoteAttempt) -> None:
        self.runs.pop(attempt.task_id, None)
        if self.attempts.get(attempt.task_id) is attempt:
            del self.attempts[attempt.task_id]

    async def _give_back(self, attempt: RemoteAttempt) -> None:
        await hand_back(self.link, attempt, self.settings.rpc_timeout_seconds)
        attempt.finished = True
        self.attempts.pop(attempt.task_id, None)

    # --- presence, drains, the end -----------------------------------------------------------------------
    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.link.connected.wait()
            welcome = self.link.welcome
            every = welcome.heartbeat_seconds if welcome is not None else self.settings.heartbeat_seconds
            try:
                data = await self.link.ask(
                    functools.partial(_beat, len(self.runs)),
                    min(self.settings.rpc_timeout_seconds, every),
                )
                if data is not None and HeartbeatReply.model_validate_json(data).drain:
                    self.request_drain()
            except (ServiceError, ValidationError, Exception) as exc:  # presence must not stop task work
                log.debug("heartbeat not answered: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _drain(self) -> None:
        await self.link.send_quietly(Ready(type="READY", slots=0))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                presence.report_status(self.rt.rpc, self.identity, "draining", "no new tasks"),
                LEAVE_TIMEOUT_SECONDS,
            )
        finished, handed_back = await self._settle(self.settings.shutdown_grace_seconds)
        log.info("drained: %d task(s) finished, %d handed back", finished, handed_back)
        await self.link.send_quietly(Drained(type="DRAINED", finished=finished, handed_back=handed_back))

    async def _settle(self, grace: float) -> tuple[int, int]:
        """Running tasks get `grace` seconds to finish; the rest are handed back and stopped."""
        runs = dict(self.runs)
        if runs:
            await asyncio.wait(runs.values(), timeout=grace)
        finished = sum(1 for run in runs.values() if run.done())
        handed_back = 0
        for task_id, run in runs.items():
            if run.done():
                continue
            attempt = self.attempts.get(task_id)
            if attempt is not None and await hand_back(self.link, attempt, self.settings.rpc_timeout_seconds):
                handed_back += 1
            run.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)
        return finished, handed_back

    def _spawn(self, work: asyncio.Future[None] | asyncio.Task[None] | object) -> None:
        assert asyncio.iscoroutine(work)
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def run_remote(settings: WorkerSettings, browser: BrowserHost, stop: asyncio.Event) -> None:
    identity, public = await remote_identity(settings, stop)
    worker = RemoteWorker(settings, browser, identity, public)
    await worker.run(stop)


def _beat(running: int, frame_id: int) -> HeartbeatFrame:
    return HeartbeatFrame(type="HEARTBEAT", id=frame_id, running_tasks=running)
