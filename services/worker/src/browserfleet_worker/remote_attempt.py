"""One TASK_ASSIGNED, start to end, for a worker on the WebSocket (docs/websocket.md "Remote workers"): the
same run as attempt.py's (execution.execute: policy, sealed secrets, profile, runner), with its frames in
place of the bus: STARTED, LOG batches while it runs, PROGRESS to keep its lease, its artifacts uploaded over
the socket, then RESULT, sent again across reconnections until the platform answers it (the bridge
acknowledges the TASKS message only after the result is stored). The claim was made by the bridge.

A socket that dies does not stop the run: the frames wait for the next connection, which names the task in
WORKER_CONNECT.held with its lease. If the platform says the worker no longer holds it (`lost`: the lease
lapsed and another worker may run it now), the run is stopped and its outcome dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass, field

from browserfleet_contracts.tasks import ArtifactRef, TaskLogLine
from browserfleet_contracts.worker_socket import (
    CHUNK_BYTES,
    ArtifactBegin,
    ArtifactEnd,
    HandBack,
    HeldTask,
    Log,
    Progress,
    Result,
    Started,
    TaskAssigned,
    chunk_frame,
)
from browserfleet_core.errors import ServiceError

from .artifacts import store_each
from .execution import execute
from .logship import LogShipper
from .runtime import WorkerRuntime
from .socketlink import Disconnected, Retryable, SocketLink
from .steps import Artifact, StepsOutcome

log = logging.getLogger(__name__)

UPLOAD_TRIES = 5
MAX_RESULT_LOGS = 10_000  # Result.logs' limit


@dataclass
class RemoteAttempt:
    assigned: TaskAssigned
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # the platform gave it to someone else
    started: bool = False
    finished: bool = False

    @property
    def task_id(self) -> str:
        return self.assigned.task_id

    @property
    def attempt(self) -> int:
        return self.assigned.attempt

    def held(self) -> HeldTask:
        return HeldTask(
            task_id=self.task_id, attempt=self.attempt, lease=self.assigned.lease, started=self.started
        )


async def run_remote_attempt(rt: WorkerRuntime, link: SocketLink, attempt: RemoteAttempt) -> None:
    task = attempt.assigned.task
    ref = f"{task.task_id}#{task.attempt}"
    timeout = rt.settings.rpc_timeout_seconds
    lease = asyncio.create_task(_keep_lease(link, attempt, rt.settings.lease_extend_seconds))
    try:
        await link.call(
            lambda i: Started(type="STARTED", id=i, task_id=task.task_id, attempt=task.attempt),
            timeout=timeout,
            give_up=attempt.lost,
        )
        attempt.started = True
        log.info("running %s (%s) for the platform at %s", ref, task.spec.kind, link.url)

        async def ship(lines: list[TaskLogLine], first: int) -> None:
            frame = lambda i: Log(  # noqa: E731
                type="LOG", id=i, task_id=task.task_id, attempt=task.attempt, first=first, lines=lines
            )
            try:  # live lines are a courtesy: the result carries every line again
                await link.call(frame, timeout=timeout, give_up=attempt.lost, patience=timeout)
            except ServiceError as exc:
                log.debug("log lines of %s not sent: %s", ref, exc.message)

        async with LogShipper(ship, interval=rt.settings.log_ship_seconds) as shipper:
            outcome = await execute(rt, task, attempt.cancelled, None)
        outcome.logs = shipper.number(outcome.logs)
        if attempt.lost.is_set():
            log.warning("%s was taken from this worker (its lease lapsed); its outcome is dropped", ref)
            return
        artifacts = await _upload_all(link, attempt, outcome, timeout)
        await link.call(
            lambda i: _result(i, attempt, outcome, artifacts), timeout=timeout, give_up=attempt.lost
        )
        log.info(
            "%s %s%s", ref, outcome.status, f": {outcome.error_message}" if outcome.error_message else ""
        )
    except ServiceError as exc:
        if attempt.lost.is_set():
            log.warning("%s was taken from this worker: %s", ref, exc.message)
        else:
            log.error(
                "%s: the platform refused its frames (%s); it will be retried elsewhere", ref, exc.message
            )
    finally:
        attempt.finished = True
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease


async def hand_back(link: SocketLink, attempt: RemoteAttempt, timeout: float) -> bool:
    """Gives the attempt back unfinished (shutdown out of grace): it is offered again at once."""
    try:
        await link.ask(
            lambda i: HandBack(type="HAND_BACK", id=i, task_id=attempt.task_id, attempt=attempt.attempt),
            timeout,
        )
        return True
    except (ServiceError, Disconnected) as exc:  # its lease lapses instead
        log.warning(
            "handing back %s failed (%s); it is offered again when its lease lapses", attempt.task_id, exc
        )
        return False


async def _keep_lease(link: SocketLink, attempt: RemoteAttempt, interval: float) -> None:
    """PROGRESS while it runs: the bridge extends the TASKS message's lease with each."""
    frame = Progress(type="PROGRESS", task_id=attempt.task_id, attempt=attempt.attempt)
    while True:
        await asyncio.sleep(interval)
        await link.send_quietly(frame)


def _result(
    frame_id: int, attempt: RemoteAttempt, outcome: StepsOutcome, artifacts: list[ArtifactRef]
) -> Result:
    return Result(
        type="RESULT",
        id=frame_id,
        task_id=attempt.task_id,
        attempt=attempt.attempt,
        status=outcome.status,
        result=outcome.result if outcome.result else None,
        error_message=(outcome.error_message or None) and outcome.error_message[:10_000],
        error_step=outcome.error_step,
        artifacts=artifacts,
        execution_time_seconds=outcome.execution_time_seconds,
        logs=outcome.logs[-MAX_RESULT_LOGS:],
        retryable=outcome.status == "failed" and outcome.retryable,
    )


async def _upload_all(
    link: SocketLink, attempt: RemoteAttempt, outcome: StepsOutcome, timeout: float
) -> list[ArtifactRef]:
    """Each artifact over the socket; one that cannot be stored fails a completed outcome (as attempt.py)."""
    return await store_each(
        outcome, attempt.task_id, lambda a: _upload(link, attempt, a, timeout), (ServiceError, Disconnected)
    )


async def _upload(
    link: SocketLink, attempt: RemoteAttempt, artifact: Artifact, timeout: float
) -> ArtifactRef:
    """ARTIFACT_BEGIN, the bytes as binary frames, ARTIFACT_END; all again (a new upload) after a drop."""
    data = artifact.data
    size = (link.welcome.chunk_bytes if link.welcome is not None else CHUNK_BYTES) or CHUNK_BYTES
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    for tries in range(1, UPLOAD_TRIES + 1):
        if attempt.lost.is_set():
            raise Disconnected()
        await link.connected.wait()
        try:
            return await _upload_once(link, attempt, artifact, pieces, digest, timeout)
        except (Disconnected, Retryable) as exc:
            if tries == UPLOAD_TRIES:
                raise
            log.info("uploading %s again (%s)", artifact.name, exc)
            await asyncio.sleep(0.5 * tries)
    raise AssertionError("unreachable")


async def _upload_once(
    link: SocketLink,
    attempt: RemoteAttempt,
    artifact: Artifact,
    pieces: list[bytes],
    digest: str,
    timeout: float,
) -> ArtifactRef:
    upload = secrets.token_hex(8)
    begin = ArtifactBegin(
        type="ARTIFACT_BEGIN",
        id=1,
        task_id=attempt.task_id,
        attempt=attempt.attempt,
        upload=upload,
        name=artifact.name,
        content_type=artifact.content_type,
        size=sum(len(p) for p in pieces),
    )
    end = ArtifactEnd(type="ARTIFACT_END", id=1, upload=upload, chunks=len(pieces), digest=digest)
    await link.ask(lambda i: begin.model_copy(update={"id": i}), timeout)
    for piece in pieces:
        await link.send(chunk_frame(upload, piece))
    answer = await link.ask(lambda i: end.model_copy(update={"id": i}), timeout)
    if answer is None:
        raise ServiceError("the platform answered no artifact reference", code="empty_reply")
    return ArtifactRef.model_validate_json(answer)
