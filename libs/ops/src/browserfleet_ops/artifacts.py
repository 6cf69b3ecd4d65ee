"""The artifacts still retained in the NATS object store `artifacts`: read into the archive with their
metadata (name, description, headers such as the owning organization, chunk size, digest), and put back on
restore, where the object store checks each one's SHA-256 digest against the archived one."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_core.streams import ARTIFACTS_STREAM, ensure_streams
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

BUCKET = subjects.ARTIFACTS_BUCKET


async def _store(nc: NatsClient) -> ObjectStore | None:
    try:
        return await nc.jetstream().object_store(BUCKET)
    except NotFoundError:
        return None


async def count(nc: NatsClient) -> int:
    store = await _store(nc)
    if store is None:
        return 0
    try:
        return len(await store.list(ignore_deletes=True))
    except NotFoundError:  # nats-py answers an empty bucket so
        return 0


async def export(nc: NatsClient, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Writes `artifacts/<n>.bin` under `out`; returns each object's entry and the names that disappeared
    (expired or deleted) between the listing and the read."""
    store = await _store(nc)
    if store is None:
        return [], []
    try:
        infos = await store.list(ignore_deletes=True)
    except NotFoundError:
        return [], []
    entries: list[dict[str, Any]] = []
    gone: list[str] = []
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    for index, info in enumerate(sorted(infos, key=lambda i: i.name)):
        member = f"artifacts/{index:06d}.bin"
        try:
            with (out / member).open("wb") as fh:
                await store.get(info.name, writeinto=fh)  # checks the object's digest as it reads
        except NotFoundError:
            (out / member).unlink(missing_ok=True)
            gone.append(info.name)
            continue
        options = info.options
        entries.append(
            {
                "name": info.name,
                "description": info.description,
                "headers": info.headers,
                "max_chunk_size": options.max_chunk_size if options else None,
                "size": info.size,
                "digest": info.digest,
                "mtime": info.mtime,
                "member": member,
            }
        )
    return entries, gone


async def purge(nc: NatsClient) -> None:
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().purge_stream(ARTIFACTS_STREAM)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode()


async def restore(nc: NatsClient, entries: list[dict[str, Any]], root: Path) -> int:
    """Puts every archived artifact back (the bucket is declared as the services declare it)."""
    js = nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(BUCKET)
    for entry in entries:
        path = root / entry["member"]
        if entry.get("digest") and _digest(path) != entry["digest"]:
            raise RuntimeError(f"artifact {entry['name']} does not match its archived digest")
        meta = ObjectMeta(
            name=entry["name"],
            description=entry.get("description"),
            headers=entry.get("headers"),
            options=ObjectMetaOptions(max_chunk_size=entry["max_chunk_size"])
            if entry.get("max_chunk_size")
            else None,
        )
        with path.open("rb") as fh:
            await store.put(entry["name"], fh, meta=meta)
    return len(entries)
