"""A task's artifacts: which one a download serves, the list a client sees, and the bytes streamed out of the
JetStream object store.

The list comes from the task's own record (the scheduler stores the `ArtifactRef`s a worker reported, those of
every attempt), so it is org-scoped like the task. A retried task has one artifact per name and attempt (a
crashed attempt's `failure.png` and `trace.zip`, then the next one's); a download takes `?attempt=N`, and serves
the latest attempt's without it.

nats-py's `ObjectStore.get()` assembles the whole object in memory; a trace or a PDF can be large, so we
read the chunk subject with an ordered consumer and hand each chunk to the response as it arrives.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

from browserfleet_contracts import subjects
from browserfleet_contracts.task_admin import ArtifactPublic
from browserfleet_contracts.tasks import ArtifactRef, TaskPublic, artifact_attempt
from browserfleet_core.errors import NotFound
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TYPE

log = logging.getLogger(__name__)


def attempt_of(ref: ArtifactRef) -> int | None:
    return artifact_attempt(ref.object_name)


def _by_attempt(refs: Sequence[ArtifactRef]) -> list[ArtifactRef]:
    # stable: stored order within an attempt (the scheduler already stores them so; a row written before
    # it kept every attempt holds one attempt's)
    return sorted(refs, key=lambda ref: attempt_of(ref) or 0)


def latest(refs: Sequence[ArtifactRef]) -> ArtifactRef:
    """Of refs with one name: the latest attempt's (the last stored, should an attempt repeat a name)."""
    return _by_attempt(refs)[-1]


def find_artifact(task: TaskPublic, name: str, attempt: int | None = None) -> ArtifactRef:
    """The artifact a download serves: `name` of `attempt`, or of the latest attempt that stored one."""
    named = [ref for ref in task.artifacts if ref.name == name]
    if not named:
        raise NotFound(f"task has no artifact named {name!r}", code="artifact_not_found", field="name")
    if attempt is None:
        return latest(named)
    of_attempt = [ref for ref in named if attempt_of(ref) == attempt]
    if not of_attempt:
        stored = sorted({a for a in map(attempt_of, named) if a is not None})
        raise NotFound(
            f"attempt {attempt} of the task stored no artifact named {name!r}"
            + (f" (attempts that did: {', '.join(map(str, stored))})" if stored else ""),
            code="artifact_not_found",
            field="attempt",
        )
    return latest(of_attempt)


def _url(task_id: str, ref: ArtifactRef) -> str:
    """The download of exactly this entry: with its attempt, so a later attempt does not change what it serves."""
    path = f"/api/v1/tasks/{task_id}/artifacts/{quote(ref.name, safe='')}"
    attempt = attempt_of(ref)
    return path if attempt is None else f"{path}?attempt={attempt}"


def public_artifacts(task: TaskPublic) -> list[ArtifactPublic]:
    """Every attempt's artifacts, by attempt, then in the order the worker reported them."""
    return [
        ArtifactPublic(
            name=ref.name,
            content_type=ref.content_type or "application/octet-stream",
            size=ref.size,
            attempt=attempt_of(ref),
            url=_url(task.id, ref),
        )
        for ref in _by_attempt(task.artifacts)
    ]


async def object_info(js: JetStreamContext, object_name: str) -> ObjectInfo:
    try:
        store = await js.object_store(subjects.ARTIFACTS_BUCKET)
        info = await store.get_info(object_name)
    except NotFoundError:  # ObjectNotFoundError and a missing bucket both land here
        raise NotFound("artifact not found", code="artifact_not_found") from None
    if not info.nuid:
        raise NotFound("artifact not found", code="artifact_not_found")
    return info


async def iter_object(
    js: JetStreamContext, info: ObjectInfo, *, chunk_timeout: float = 10.0
) -> AsyncIterator[bytes]:
    if not info.size:
        return
    subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=subjects.ARTIFACTS_BUCKET, obj=info.nuid)
    sub = await js.subscribe(subject, ordered_consumer=True)
    digest = hashlib.sha256()
    try:
        while True:
            msg = await sub.next_msg(timeout=chunk_timeout)
            digest.update(msg.data)
            yield msg.data
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    expected = (info.digest or "").removeprefix(OBJ_DIGEST_TYPE).removeprefix(OBJ_DIGEST_TYPE.upper())
    if expected and base64.urlsafe_b64decode(expected + "=" * (-len(expected) % 4)) != digest.digest():
        # Headers are gone by now; aborting the stream is the only honest signal left.
        log.error("artifact %s failed its digest check", info.name)
        raise RuntimeError("artifact digest mismatch")
