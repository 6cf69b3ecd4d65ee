"""One TASKS message, start to end (CONTRIBUTING "The task protocol"): claim it (the claim is what moves the
task to running and writes `task.started`), ship its log lines while it runs, store its artifacts, publish its
result, ack.

The message is acked only after the result is safely on TASK_UPDATES (JetStream confirmed it), so a crash
anywhere before that leads to a redelivery rather than a lost outcome; the scheduler's claim makes the rerun
safe. The ack itself is not waited for: if it is lost, JetStream offers the message again after its ack wait,
and whoever claims it then is refused (the task is finished) and terms it. Every update carries a Nats-Msg-Id
(`subjects.update_msg_id`), so a publication repeated after a lost ack is stored once.

No `started` update is sent: the scheduler never needed it (the claim already records the start), and it cost
a JetStream write, its confirmation and a scheduler batch per task. Schedulers still accept one from older
workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats.errors
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ClaimRequest, TaskDispatch, TaskLogLine, TaskUpdateMessage
from browserfleet_core.errors import ServiceError
from nats.aio.msg import Msg
from pydantic import ValidationError

from .artifacts import store_artifacts
from .browser import Prepared, TraceOptions
from .consumer import free_slot
from .execution import execute
from .liveview import LiveView, refusal
from .logship import LogShipper
from .runtime import WorkerRuntime

log = logging.getLogger(__name__)

RESULT_PUBLISH_ATTEMPTS = 5


async def run_attempt(rt: WorkerRuntime, msg: Msg) -> None:
    try:
        dispatch = TaskDispatch.model_validate_json(msg.data)
    except ValidationError as exc:
        log.error("terminating a malformed TaskDispatch on %s: %s", msg.subject, _first_error(exc))
        await msg.term()
        return
    # the task's context opens (with its trace recording) while its claim makes its round trip; one the task
    # does not take is closed
    prepared = rt.browser.prepare(_trace(rt, dispatch)) if dispatch.spec.profile is None else None
    try:
        await _run_claimed(rt, msg, dispatch, prepared)
    finally:
        if prepared is not None:
            rt.browser.release(prepared)


def _trace(rt: WorkerRuntime, dispatch: TaskDispatch) -> TraceOptions | None:
    """The trace a steps task will most likely want (StepsRunner.trace_options decides, and stops one that
    differs): agent tasks record none."""
    settings = rt.settings
    if settings.trace_recording(dispatch.attempt) == "off" or dispatch.spec.kind != "steps":
        return None
    snapshots = settings.trace_snapshots
    return TraceOptions(
        screenshots=settings.trace_screenshots, snapshots=snapshots is True, network=snapshots == "failure"
    )


async def _run_claimed(
    rt: WorkerRuntime, msg: Msg, dispatch: TaskDispatch, prepared: Prepared | None
) -> None:
    # listen before claiming: the claim moves the task to running, and a cancel sent the moment it shows as
    # running (even before the claim's reply reaches us) must land; the subscription precedes the claim
    # request on this connection, so the server has it before the scheduler can answer
    cancelled = asyncio.Event()

    async def on_cancel(_msg: Msg) -> None:
        cancelled.set()

    cancel_sub = await rt.nc.subscribe(subjects.task_cancel(dispatch.task_id), cb=on_cancel)
    # the live view too, for the same reason, when the worker knows its id (the gateway addresses the view with
    # the claimant's id): a viewer who asks the moment the task shows as running must find it. It answers
    # nobody until the claim is granted; a refused claim's view is closed having answered nothing
    ahead = None
    if rt.identity.worker_id:
        refuse = refusal(rt.settings, dispatch.spec)
        ahead = LiveView(
            rt.nc, rt.settings, dispatch.task_id, dispatch.attempt, rt.identity.worker_id, refuse=refuse
        )
    try:
        if ahead is not None:
            await ahead.open(ahead=True)
        await _run_listening(rt, msg, dispatch, prepared, cancelled, ahead)
    finally:
        if ahead is not None:
            await ahead.close()  # nothing to do once the run closed it
        with contextlib.suppress(Exception):
            await cancel_sub.unsubscribe()


async def _run_listening(
    rt: WorkerRuntime,
    msg: Msg,
    dispatch: TaskDispatch,
    prepared: Prepared | None,
    cancelled: asyncio.Event,
    ahead: LiveView | None = None,
) -> None:
    task_ref = f"{dispatch.task_id}#{dispatch.attempt}"
    try:
        claim = await rt.rpc.call(
            endpoints.Scheduler.CLAIM,
            ClaimRequest(
                task_id=dispatch.task_id,
                attempt=dispatch.attempt,
                worker_key=rt.identity.worker_key,
                # a redelivery (count > the holder's) tells the scheduler the holder lost its lease
                delivery=_delivery(msg),
            ),
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
    worker_id = claim.worker_id or rt.identity.worker_id or rt.settings.worker_name
    # the scheduler's word for who we are: updates go out under it, the only id our bus identity may use
    rt.identity.worker_id = rt.identity.worker_id or claim.worker_id
    # the scheduler records the claimant's id on the task: the gateway addresses the live view with it
    live = ahead
    if live is not None and (live.worker_id, live.task_id, live.attempt) != (
        claim.worker_id,
        task.task_id,
        task.attempt,
    ):
        await live.close()  # opened under an id the claim does not name: it never answered anyone
        live = None
    if claim.worker_id:
        refuse = refusal(rt.settings, task.spec)
        if live is not None:
            live.grant(refuse)  # what waited for the claim is answered now
        else:
            live = LiveView(rt.nc, rt.settings, task.task_id, task.attempt, claim.worker_id, refuse=refuse)
    try:
        if live is not None and live is not ahead:
            await live.open()
        log.info("running %s (%s)", task_ref, task.spec.kind)

        async def ship(lines: list[TaskLogLine], first: int) -> None:
            update = TaskUpdateMessage(
                task_id=task.task_id, attempt=task.attempt, worker_id=worker_id, kind="log", logs=lines
            )
            await _publish(rt, update, subjects.update_msg_id(task.task_id, task.attempt, "log", first))

        async with LogShipper(ship, interval=rt.settings.log_ship_seconds) as shipper:
            outcome = await execute(rt, task, cancelled, live, prepared)
        outcome.logs = shipper.number(outcome.logs)
    finally:
        if live is not None:
            await live.close()
    free_slot()  # the browser's part is over: the next message may come while this result is stored
    artifacts = await store_artifacts(rt.js, rt.rpc, rt.identity.worker_key, task, outcome)
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
    await _publish_with_retry(rt, result, subjects.update_msg_id(task.task_id, task.attempt, "result"))
    log.info(
        "%s %s%s", task_ref, outcome.status, f": {outcome.error_message}" if outcome.error_message else ""
    )
    await msg.ack()


async def _publish(rt: WorkerRuntime, update: TaskUpdateMessage, msg_id: str) -> None:
    await rt.js.publish(
        subjects.task_update(update.worker_id, update.task_id),
        update.model_dump_json().encode(),
        stream=subjects.TASK_UPDATES_STREAM,
        headers={"Nats-Msg-Id": msg_id},
    )


async def _publish_with_retry(rt: WorkerRuntime, update: TaskUpdateMessage, msg_id: str) -> None:
    # the msg id makes retries safe: JetStream drops a copy that did arrive
    delay = 0.5
    for attempt in range(1, RESULT_PUBLISH_ATTEMPTS + 1):
        try:
            await _publish(rt, update, msg_id)
            return
        except (nats.errors.Error, TimeoutError) as exc:
            if attempt == RESULT_PUBLISH_ATTEMPTS:
                raise
            log.warning("publishing the result of %s failed (%s); retrying", update.task_id, exc)
            await asyncio.sleep(delay)
            delay *= 2


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
