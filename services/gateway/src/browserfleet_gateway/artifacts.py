"""Streaming an artifact out of the JetStream object store without holding it in memory.

nats-py's `ObjectStore.get()` assembles the whole object in memory; a trace or a PDF can be large, so we
read the chunk subject with an ordered consumer and hand each chunk to the response as it arrives.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator

from browserfleet_contracts import subjects
from browserfleet_core.errors import NotFound
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TYPE

log = logging.getLogger(__name__)


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
