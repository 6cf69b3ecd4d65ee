"""The worker's logic: its identity, the pull loop, and one task's lifecycle (CONTRIBUTING "The task protocol").

A TASKS message is acked only after the result is safely on TASK_UPDATES, so a crash anywhere before
that leads to a redelivery rather than a lost outcome; the scheduler's claim makes the rerun safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack
from browserfleet_contracts.profiles import ProfileLease
from browserfleet_contracts.tasks import (
    MAX_UPLOAD_BYTES,
    ArtifactRef,
    ArtifactSource,
    ClaimReply,
    ClaimRequest,
    TaskDispatch,
    TaskLogLine,
    TaskUpdateMessage,
    artifact_object_name,
)
from browserfleet_contracts.vault import ReleaseReply, ReleaseRequest
from browserfleet_contracts.workers import (
    DrainReply,
    Heartbeat,
    RegisterReply,
    RegisterRequest,
    WorkerAuthRequest,
    WorkerIdentity,
)
from browserfleet_core.errors import ServiceError, Unavailable
from browserfleet_core.messaging import RpcClient
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import NotFoundError
from playwright.async_api import Error as PlaywrightError
from pydantic import ValidationError

from . import orgpolicy, profiles
from .browser import BrowserHost
from .execution import Runner, TaskRefused, build_runner, record_outcome
from .logship import LogShipper
from .netguard import Policy
from .secret_values import Masker, MaskRegistry
from .settings import WorkerSettings
from .steps import StepError, StepsOutcome, StepsRunner

log = logging.getLogger(__name__)

CANCELLED = "cancelled while running"
AGENT_UNAVAILABLE = "agent tasks need an LLM endpoint; the agent runner is not available in this build"
STATE_FILE = "worker.json"
PROBE_TIMEOUT_SECONDS = 2.0  # a no-wait pull answers at once; this only bounds a server that does not
IDLE_WAIT_SECONDS = 1.0  # with no doorbell, re-probe this often: redeliveries after a lost lease ring none
# A ring can come before the consumer offers the message it announces (JetStream hands a stored message to
# its consumers asynchronously), so a probe right after a ring may find nothing yet: probe again after these
# short pauses before the long wait. Without them, a share of idle-path tasks waited the full
# IDLE_WAIT_SECONDS (measured: a p90 of ~1 s from submit to start at 10 tasks/s).
RING_REPROBE_SECONDS = (0.002, 0.005, 0.01, 0.025, 0.05)
RESULT_PUBLISH_ATTEMPTS = 5


# --- identity ------------------------------------------------------------------------------------------
@dataclass
class Identity:
    worker_key: str
    worker_id: str | None
    pool: str


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
    """WORKER_KEY, else the key saved in WORKER_STATE_DIR, else trade WORKER_INVITE_CODE for one."""
    identity: Identity | None = None
    if settings.worker_key:
        identity = Identity(settings.worker_key, None, settings.pool)
    elif settings.worker_state_dir is not None:
        identity = load_identity(settings.worker_state_dir)
    if identity is None:
        if not settings.worker_invite_code:
            raise WorkerConfigError(
                "no worker key: set WORKER_KEY, or WORKER_INVITE_CODE (with WORKER_STATE_DIR)"
            )
        identity = await _register(settings, rpc, stop)
    if "pool" in settings.model_fields_set:  # an explicit POOL beats what registration said
        identity.pool = settings.pool
    return identity


async def _register(settings: WorkerSettings, rpc: RpcClient, stop: asyncio.Event) -> Identity:
    request = RegisterRequest(
        invite_code=settings.worker_invite_code or "",
        name=settings.worker_name,
        tags=settings.worker_tags,
        version=_version(),
    )
    delay = 1.0
    while True:
        try:
            reply: RegisterReply = await rpc.call(subjects.Workers.REGISTER, request, RegisterReply)
            break
        except Unavailable as exc:
            # in `make dev` the worker may start before the worker-gateway; keep trying
            log.warning("cannot register yet (%s); retrying in %.0f s", exc.message, delay)
        except ServiceError as exc:
            raise WorkerConfigError(f"registration refused: {exc.message}") from exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise WorkerConfigError("stopped before registration succeeded")
        delay = min(delay * 2, 15.0)
    identity = Identity(reply.worker_key, reply.worker_id, reply.pool)
    if settings.worker_state_dir is not None:
        path = save_identity(settings.worker_state_dir, identity)
        log.info("registered as worker %s in pool %s; key saved to %s", reply.worker_id, reply.pool, path)
    else:
        log.warning(
            "registered as worker %s, but WORKER_STATE_DIR is unset: a restart will need a new invite",
            reply.worker_id,
        )
    return identity


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("browserfleet-worker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return None


# --- the worker ----------------------------------------------------------------------------------------
class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        nc: NatsClient,
        browser: BrowserHost,
        identity: Identity,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.browser = browser
        self.identity = identity
        self.rpc = RpcClient(nc, timeout=settings.rpc_timeout_seconds)
        self.masks = MaskRegistry()
        self.org_policies = orgpolicy.OrgPolicies(
            self.rpc, identity.worker_key, ttl_seconds=settings.org_policy_cache_seconds
        )
        self.running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.worker_slots)
        self._consumers: list[str] = []  # durable names, urgent first
        self._doorbell = asyncio.Event()  # rung by every dispatch published to this worker's pool
        self._inbox: Subscription | None = None
        self.halt = asyncio.Event()  # stop pulling: set by stop (SIGTERM) or a drain request
        self._drain_replies: list[str] = []
        self._drain_result: tuple[int, int] | None = None

    # -- main loops --
    async def run(self, stop: asyncio.Event) -> None:
        """Pull and run tasks until `stop` is set, then let running ones finish (bounded).

        A drain (`workers.drain.<worker_id>` or SIGUSR1) does the same without returning: the worker stops
        pulling, finishes or hands back its running tasks, and stays up (heartbeats go on) until `stop`.
        """
        self._consumers = [subjects.task_run_consumer(self.identity.pool, p) for p in subjects.PRIORITIES]
        # JetStream also delivers each published dispatch to plain subscribers of its subject: a doorbell
        # that wakes an idle worker at once, instead of it lingering in a long pull on one priority.
        bell = await self.nc.subscribe(subjects.task_run(self.identity.pool, "*"), cb=self._ring)
        # pulled messages arrive on this inbox under their own subject, which nc.request's mux cannot route
        self._inbox = await self.nc.subscribe(self.nc.new_inbox())
        drain_sub = await self._listen_for_drain()
        log.info(
            "worker %s pulling from pool %s with %d slot(s)",
            self.identity.worker_id or self.settings.worker_name,
            self.identity.pool,
            self.settings.worker_slots,
        )
        heartbeat = asyncio.create_task(self.heartbeat_loop(stop))
        stopper = asyncio.create_task(stop.wait())
        stopper.add_done_callback(lambda _t: self.halt.set())
        try:
            await self.pull_loop(self.halt)
            if not stop.is_set():  # drained on request: stay up, idle, until told to stop
                await self._drained()
                await stop.wait()
        finally:
            stopper.cancel()
            await self.drain(self.settings.shutdown_grace_seconds)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(Exception):
                await bell.unsubscribe()
                await self._inbox.unsubscribe()
            if drain_sub is not None:
                with contextlib.suppress(Exception):
                    await drain_sub.unsubscribe()

    def request_drain(self) -> None:
        """Stop taking work; running tasks get the grace period (SIGUSR1 and the drain subject call this)."""
        if not self.halt.is_set():
            log.info("drain requested: no new tasks; %d running", len(self.running))
        self.halt.set()

    async def _listen_for_drain(self) -> Any:
        worker_id = self.identity.worker_id
        if worker_id is None:  # started with WORKER_KEY: ask worker-gateway who we are
            try:
                who: WorkerIdentity = await self.rpc.call(
                    subjects.Workers.AUTHENTICATE,
                    WorkerAuthRequest(worker_key=self.identity.worker_key),
                    WorkerIdentity,
                )
                worker_id = self.identity.worker_id = who.worker_id
            except ServiceError as exc:
                log.warning("worker id unknown (%s): drain by SIGUSR1 only", exc.message)
                return None

        async def on_drain(msg: Msg) -> None:
            self.request_drain()
            if msg.reply:
                self._drain_replies.append(msg.reply)
            if self._drain_result is not None:  # already drained: answer at once
                await self._answer_drains()

        return await self.nc.subscribe(subjects.worker_drain(worker_id), cb=on_drain)

    async def _drained(self) -> None:
        self._drain_result = await self.drain(self.settings.shutdown_grace_seconds)
        log.info(
            "drained: %d task(s) finished, %d handed back; idle until stopped",
            self._drain_result[0],
            self._drain_result[1],
        )
        await self._answer_drains()

    async def _answer_drains(self) -> None:
        finished, handed_back = self._drain_result or (0, 0)
        reply = DrainReply(
            worker_id=self.identity.worker_id or self.settings.worker_name,
            finished=finished,
            handed_back=handed_back,
        )
        while self._drain_replies:
            with contextlib.suppress(Exception):
                await self.nc.publish(self._drain_replies.pop(), reply.model_dump_json().encode())

    async def pull_loop(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            if not await self._acquire_slot(halt):
                return
            msg = await self._next_message(halt)
            if msg is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self.run_message(msg))
            self.running.add(task)
            task.add_done_callback(self._finished)

    async def _acquire_slot(self, halt: asyncio.Event) -> bool:
        """A free slot, or False once `halt` is set (a full worker must still notice SIGTERM at once)."""
        slot = asyncio.create_task(self._slots.acquire())
        halted = asyncio.create_task(halt.wait())
        await asyncio.wait({slot, halted}, return_when=asyncio.FIRST_COMPLETED)
        halted.cancel()
        if slot.done() and not slot.cancelled():
            if halt.is_set():
                self._slots.release()
                return False
            return True
        slot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slot
        if slot.done() and not slot.cancelled():  # it got the slot while being cancelled
            self._slots.release()
        return False

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self._slots.release()

    async def _ring(self, _msg: Msg) -> None:
        self._doorbell.set()

    async def _next_message(self, halt: asyncio.Event) -> Msg | None:
        """Urgent first: a no-wait pull on each priority (one local round trip each), then sleep until
        the pool's doorbell rings (a new dispatch) or IDLE_WAIT_SECONDS pass (a redelivery rings none)."""
        reprobe: Iterator[float] = iter(())
        while not halt.is_set():
            self._doorbell.clear()  # before probing: a dispatch published mid-probe re-wakes us at once
            for durable in self._consumers:
                if halt.is_set():
                    return None
                try:
                    msg = await self._pull_no_wait(durable)
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("pulling tasks from %s failed (%s); retrying", durable, exc)
                    await asyncio.sleep(1.0)
                    break
                if msg is not None:
                    if halt.is_set():  # fetched while halting: give it straight back
                        with contextlib.suppress(Exception):
                            await msg.nak()
                        return None
                    return msg
            else:
                pause = next(reprobe, None)
                if pause is not None:
                    await asyncio.sleep(pause)
                    continue
                bell = asyncio.create_task(self._doorbell.wait())
                halted = asyncio.create_task(halt.wait())
                done, _ = await asyncio.wait(
                    {bell, halted}, timeout=IDLE_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                bell.cancel()
                halted.cancel()
                reprobe = iter(RING_REPROBE_SECONDS if bell in done else ())
        return None

    async def _pull_no_wait(self, durable: str) -> Msg | None:
        """One message from `durable` if it has one now, else None, without leaving a pull request behind.

        nats-py's fetch(1) always lingers until its expiry; the JetStream API's `no_wait` answers at once
        with the message or a 404 status, so probing four priorities costs four round trips, not seconds.
        """
        assert self._inbox is not None
        request = json.dumps({"batch": 1, "no_wait": True}).encode()
        # One probe in flight at a time (the pull loop is sequential), so the inbox needs no multiplexing;
        # a late answer to a timed-out probe is read by the next one and is still a real message or a 404.
        await self.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{subjects.TASKS_STREAM}.{durable}", request, reply=self._inbox.subject
        )
        reply = await self._inbox.next_msg(timeout=PROBE_TIMEOUT_SECONDS)
        status = (reply.headers or {}).get("Status")
        if status is not None:
            if status in ("404", "408", "409"):  # no messages / request expired / max waiting: nothing now
                return None
            raise nats.errors.Error(
                f"pull from {durable} answered {status} {(reply.headers or {}).get('Description', '')}"
            )
        return reply

    async def drain(self, grace: float) -> tuple[int, int]:
        """Waits up to `grace` for running tasks; the rest are cancelled and handed back (nak).
        Returns (finished, handed back)."""
        if not self.running:
            return 0, 0
        log.info("waiting up to %.0f s for %d running task(s)", grace, len(self.running))
        done, pending = await asyncio.wait(set(self.running), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("handing %d task(s) back for redelivery: the grace period ran out", len(pending))
            await asyncio.wait(pending)
        return len(done), len(pending)

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            beat = Heartbeat(
                worker_key=self.identity.worker_key,
                busy=len(self.running) >= self.settings.worker_slots,
                running_tasks=len(self.running),
                slots=self.settings.worker_slots,
            )
            try:
                await self.rpc.call(
                    subjects.Workers.HEARTBEAT,
                    beat,
                    Ack,
                    timeout=min(self.settings.rpc_timeout_seconds, self.settings.heartbeat_seconds),
                )
                if failing:
                    log.info("heartbeats are answered again")
                failing = False
            except ServiceError as exc:
                # the worker-gateway being down must not stop task work; say so once, not every beat
                if not failing:
                    log.warning("heartbeat failed: %s; will keep trying", exc.message)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_seconds)

    # -- one message --
    async def run_message(self, msg: Msg) -> None:
        lease = asyncio.create_task(self._extend_lease(msg))
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            # shutdown ran out of grace: hand the message back now instead of after ack_wait
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("processing a task message failed; it will be redelivered")
        finally:
            lease.cancel()

    async def _extend_lease(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_extend_seconds)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("extending a lease failed: %s", exc)

    async def _process(self, msg: Msg) -> None:
        try:
            dispatch = TaskDispatch.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("terminating a malformed TaskDispatch on %s: %s", msg.subject, _first_error(exc))
            await msg.term()
            return
        task_ref = f"{dispatch.task_id}#{dispatch.attempt}"
        try:
            claim: ClaimReply = await self.rpc.call(
                subjects.Scheduler.CLAIM,
                ClaimRequest(
                    task_id=dispatch.task_id,
                    attempt=dispatch.attempt,
                    worker_key=self.identity.worker_key,
                    # a redelivery (count > the holder's) tells the scheduler the holder lost its lease
                    delivery=_delivery(msg),
                ),
                ClaimReply,
            )
        except ServiceError as exc:
            log.warning("claiming %s failed (%s); handing it back", task_ref, exc.message)
            await msg.nak(delay=5)
            return
        if not claim.granted:
            log.info("claim for %s refused: %s", task_ref, claim.reason or "no reason given")
            await msg.term()
            return
        task = claim.task or dispatch
        worker_id = claim.worker_id or self.identity.worker_id or self.settings.worker_name
        # listen before announcing `started`: a cancel sent the moment the task shows as running must land
        cancelled = asyncio.Event()

        async def on_cancel(_msg: Msg) -> None:
            cancelled.set()

        cancel_sub = await self.nc.subscribe(subjects.task_cancel(task.task_id), cb=on_cancel)
        try:
            await self._publish(
                TaskUpdateMessage(
                    task_id=task.task_id, attempt=task.attempt, worker_id=worker_id, kind="started"
                ),
                f"{task.task_id}:{task.attempt}:started",
            )
            log.info("running %s (%s)", task_ref, task.spec.kind)

            async def ship(lines: list[TaskLogLine], first: int) -> None:
                update = TaskUpdateMessage(
                    task_id=task.task_id, attempt=task.attempt, worker_id=worker_id, kind="log", logs=lines
                )
                await self._publish(update, f"{task.task_id}:{task.attempt}:log:{first}")

            async with LogShipper(ship, interval=self.settings.log_ship_seconds) as shipper:
                outcome = await self.execute(task, cancelled)
            outcome.logs = shipper.number(outcome.logs)
        finally:
            with contextlib.suppress(Exception):
                await cancel_sub.unsubscribe()
        artifacts = await self._store_artifacts(task, outcome)
        result = TaskUpdateMessage(
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=worker_id,
            kind="result",
            status=outcome.status,
            result=outcome.result if outcome.result else None,
            error_message=outcome.error_message,
            error_step=outcome.error_step,
            artifacts=artifacts,
            execution_time_seconds=outcome.execution_time_seconds,
            logs=outcome.logs,
            retryable=outcome.status == "failed" and outcome.retryable,
        )
        await self._publish_with_retry(result, f"{task.task_id}:{task.attempt}:result")
        log.info(
            "%s %s%s", task_ref, outcome.status, f": {outcome.error_message}" if outcome.error_message else ""
        )
        await msg.ack_sync(timeout=self.settings.rpc_timeout_seconds)

    async def execute(self, task: TaskDispatch, cancelled: asyncio.Event | None = None) -> StepsOutcome:
        """Release the secrets, run the steps in a fresh context, forget the secrets."""
        started = time.monotonic()
        cancelled = cancelled or asyncio.Event()
        if cancelled.is_set():
            return StepsOutcome(status="failed", result={}, error_message=CANCELLED)
        try:  # the organization's restrictions apply to every task: no policy, no run
            org = await self.org_policies.get(task.org_id)
        except orgpolicy.OrgPolicyUnavailable as exc:
            return StepsOutcome(status="failed", result={}, error_message=str(exc))
        names = orgpolicy.secret_names(task, org)
        values: dict[str, str] = {}
        if names:
            try:
                reply: ReleaseReply = await self.rpc.call(
                    subjects.Vault.RELEASE,
                    ReleaseRequest(
                        task_id=task.task_id, worker_key=self.identity.worker_key, names=sorted(names)
                    ),
                    ReleaseReply,
                )
            except ServiceError as exc:
                return StepsOutcome(
                    status="failed", result={}, error_message=f"secrets not released: {exc.message}"
                )
            missing = sorted(names - reply.values.keys())
            if missing:
                return StepsOutcome(
                    status="failed", result={}, error_message=f"secrets not released: {', '.join(missing)}"
                )
            values = {name: reply.values[name] for name in names}
        held = self.masks.register(values.values())
        events = orgpolicy.SecurityEvents(self.js, task, values)
        lease: ProfileLease | None = None
        saved_state: dict[str, Any] | None = None
        waited_line: TaskLogLine | None = None
        try:
            settings = self.settings
            agent = task.spec.agent
            if task.spec.kind == "agent" and agent is not None and agent.api_key_secret:
                settings = settings.with_llm_api_key(values[agent.api_key_secret])  # the org's key
            runner, policy = build_runner(settings, task, values, org, events)
            if isinstance(runner, StepsRunner):
                runner.artifact_reader = functools.partial(self._read_artifact, task)
            if task.spec.profile is not None:
                lease, waited = await profiles.acquire(
                    self.rpc,
                    task_id=task.task_id,
                    worker_key=self.identity.worker_key,
                    profile=task.spec.profile,
                    wait_seconds=min(self.settings.profile_wait_seconds, float(task.timeout_seconds)),
                    cancelled=cancelled,
                )
                if waited >= profiles.FIRST_POLL_SECONDS:
                    waited_line = TaskLogLine(
                        message=f"waited {waited:.1f} s for profile {task.spec.profile} (held by another task)"
                    )
                saved_state = {}
            outcome = await self._run_cancellable(
                runner,
                cancelled,
                policy,
                storage_state=lease.state if lease is not None else None,
                keep_state=saved_state,
            )
            if waited_line is not None:
                outcome.logs.insert(0, waited_line)
            if lease is not None:
                outcome = await self._finish_profile(task, lease, outcome, saved_state or None)
                lease = None
        except profiles.ProfileCancelled:
            outcome = StepsOutcome(status="failed", result={}, error_message=CANCELLED)
        except (TaskRefused, profiles.ProfileUnavailable) as exc:
            outcome = StepsOutcome(
                status="failed", result={}, error_message=Masker(values.values()).text(str(exc))
            )
        except Exception as exc:
            log.exception("running %s failed unexpectedly", task.task_id)
            message = f"worker error: {type(exc).__name__}: {exc}"
            outcome = StepsOutcome(
                status="failed",
                result={},
                error_message=Masker(values.values()).text(message)[:500],
                # Playwright failing outside the steps (opening the context, a dead browser) is the worker's
                retryable=isinstance(exc, PlaywrightError),
            )
        finally:
            if lease is not None:  # failed, cancelled or shut down before the end: keep the stored state
                await profiles.release_quietly(
                    self.rpc, task_id=task.task_id, worker_key=self.identity.worker_key, lease=lease
                )
            await events.close()
            self.masks.release(held)
            values.clear()
        outcome.execution_time_seconds = round(time.monotonic() - started, 3)
        record_outcome(self.browser, outcome)
        with contextlib.suppress(Exception):
            await self.browser.recycle_if_due(
                after_tasks=self.settings.recycle_after_tasks, memory_mb=self.settings.recycle_memory_mb
            )
        return outcome

    async def _finish_profile(
        self, task: TaskDispatch, lease: ProfileLease, outcome: StepsOutcome, state: dict[str, Any] | None
    ) -> StepsOutcome:
        """After success the context's storage state goes back to the vault; otherwise only the lease ends."""
        keep = state if outcome.status == "completed" else None
        try:
            reply = await profiles.save(
                self.rpc, task_id=task.task_id, worker_key=self.identity.worker_key, lease=lease, state=keep
            )
        except ServiceError as exc:
            if keep is None:
                log.warning("ending the lease on profile %s failed: %s", lease.profile, exc.message)
                return outcome
            # the session the next task relies on was not stored: say so rather than report success
            outcome.status = "failed"
            outcome.error_message = f"profile {lease.profile} not saved: {exc.message}"
            return outcome
        if reply.saved:
            outcome.logs.append(
                TaskLogLine(message=f"profile {lease.profile} saved (version {reply.version})")
            )
        return outcome

    async def _run_cancellable(
        self,
        runner: Runner,
        cancelled: asyncio.Event,
        policy: Policy | None = None,
        *,
        storage_state: dict[str, Any] | None = None,
        keep_state: dict[str, Any] | None = None,
    ) -> StepsOutcome:
        """Runs the steps in a fresh context (loaded with `storage_state`) until they finish or `cancelled`
        is set. After a success, the context's storage state is copied into `keep_state` when given."""
        async with self.browser.context(policy, accept_downloads=True, storage_state=storage_state) as ctx:
            run = asyncio.create_task(runner.run(ctx))
            signal = asyncio.create_task(cancelled.wait())
            try:
                await asyncio.wait({run, signal}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # also on our own cancellation (shutdown out of grace): nothing may outlive the context
                signal.cancel()
                if not run.done():
                    run.cancel()
                    await asyncio.gather(run, return_exceptions=True)
            if not run.cancelled():
                try:
                    outcome = run.result()
                except PlaywrightError as exc:  # the runner could not even start: a browser problem
                    message = f"browser error: {exc}".split("\n")[0][:500]
                    outcome = runner.masked(StepsOutcome(status="failed", result={}, error_message=message))
                if outcome.status == "failed":
                    fault = await self.browser.fault(ctx)
                    if fault is not None:  # not the steps' doing: the scheduler may run it again
                        outcome.retryable = True
                        outcome.error_message = f"{fault} (retryable): {outcome.error_message or 'failed'}"
                if keep_state is not None and outcome.status == "completed":
                    try:
                        keep_state.update(await asyncio.wait_for(ctx.storage_state(), 10))
                    except Exception as exc:
                        outcome.status = "failed"
                        outcome.error_message = f"reading the profile's storage state failed: {exc}"[:500]
                return outcome
            return runner.masked(
                StepsOutcome(
                    status="failed",
                    result=await runner.partial_result(),
                    error_message=CANCELLED,
                    error_step=runner.index,
                )
            )

    async def _store_artifacts(self, task: TaskDispatch, outcome: StepsOutcome) -> list[ArtifactRef]:
        if not outcome.artifacts:
            return []
        refs: list[ArtifactRef] = []
        store = await self.js.object_store(subjects.ARTIFACTS_BUCKET)
        for artifact in outcome.artifacts:
            object_name = artifact_object_name(task.task_id, task.attempt, artifact.name)
            try:
                await store.put(
                    object_name,
                    artifact.data,
                    # the org travels with the object: an upload step of another org's task cannot read it
                    meta=ObjectMeta(description=artifact.content_type, headers={ORG_HEADER: [task.org_id]}),
                )
            except Exception as exc:
                log.warning("storing artifact %s failed: %s", object_name, exc)
                if outcome.status == "completed":
                    outcome.status = "failed"
                    outcome.error_message = f"storing artifact {artifact.name} failed"
                continue
            refs.append(
                ArtifactRef(
                    name=artifact.name,
                    object_name=object_name,
                    content_type=artifact.content_type,
                    size=len(artifact.data),
                )
            )
        return refs

    async def _read_artifact(self, task: TaskDispatch, source: ArtifactSource) -> tuple[bytes, str]:
        """An earlier task's artifact for an upload step: only one stored by a task of the same organization
        (another org's looks exactly like a missing one), at most MAX_UPLOAD_BYTES."""
        label = f"artifact {source.name!r} of task {source.task_id}"
        if source.attempt is None:  # the gateway records the attempt when it checks the reference
            raise StepError(f"{label}: the reference names no attempt")
        object_name = artifact_object_name(source.task_id, source.attempt, source.name)
        try:
            store = await self.js.object_store(subjects.ARTIFACTS_BUCKET)
            info = await store.get_info(object_name)
        except NotFoundError:
            raise StepError(f"{label} not found (it may have expired)") from None
        except Exception as exc:
            raise StepError(f"{label}: reading it failed ({type(exc).__name__})") from None
        if info.deleted or _org_of(info) != task.org_id:
            if not info.deleted:
                log.warning("task %s named %s of another organization", task.task_id, object_name)
            raise StepError(f"{label} not found (it may have expired)")
        if (info.size or 0) > MAX_UPLOAD_BYTES:
            raise StepError(f"{label} is {info.size} bytes; an upload takes at most {MAX_UPLOAD_BYTES}")
        try:
            data = (await store.get(object_name)).data or b""
        except Exception as exc:
            raise StepError(f"{label}: reading it failed ({type(exc).__name__})") from None
        if len(data) > MAX_UPLOAD_BYTES:  # replaced by a bigger object meanwhile
            raise StepError(f"{label} is {len(data)} bytes; an upload takes at most {MAX_UPLOAD_BYTES}")
        return data, info.description or "application/octet-stream"

    async def _publish(self, update: TaskUpdateMessage, msg_id: str) -> None:
        await self.js.publish(
            subjects.task_update(update.task_id),
            update.model_dump_json().encode(),
            stream=subjects.TASK_UPDATES_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def _publish_with_retry(self, update: TaskUpdateMessage, msg_id: str) -> None:
        # the msg id makes retries safe: JetStream drops a copy that did arrive
        delay = 0.5
        for attempt in range(1, RESULT_PUBLISH_ATTEMPTS + 1):
            try:
                await self._publish(update, msg_id)
                return
            except (nats.errors.Error, TimeoutError) as exc:
                if attempt == RESULT_PUBLISH_ATTEMPTS:
                    raise
                log.warning("publishing the result of %s failed (%s); retrying", update.task_id, exc)
                await asyncio.sleep(delay)
                delay *= 2


ORG_HEADER = "Bf-Org-Id"


def _org_of(info: ObjectInfo) -> str | None:
    value = (info.headers or {}).get(ORG_HEADER)
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value is not None else None


def _delivery(msg: Msg) -> int | None:
    try:
        return int(msg.metadata.num_delivered) if msg.metadata.num_delivered else None
    except Exception:  # not a JetStream message (tests), or metadata without a count
        return None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    first: dict[str, Any] = dict(errors[0])
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
