"""How a worker writes and reads artifacts without any right over the object store beyond sending chunks.

A worker publishes an artifact's chunks itself (`$O.artifacts.C.<nuid>`, the only object-store subject its
bus identity may publish) and then asks worker-gateway to commit them (`svc.workers.commit_artifact`): the
metadata that makes them the object `<task_id>/<attempt>/<name>` is written only when the worker holds that
running attempt and the chunks are all there. An upload step reads an earlier artifact of the same
organization through worker-gateway too (`svc.workers.read_artifact`), one chunk per request, because a
worker may not read the object store (another organization's artifacts are in the same bucket).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from .common import Contract
from .steps import ArtifactSource

# the organization an object belongs to travels with it: another organization's task cannot read it
ORG_HEADER: Final = "Bf-Org-Id"
CHUNK_SIZE: Final = 128 * 1024  # nats-py's object store default: readers see the same objects either way

Nuid = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class ArtifactCommitRequest(Contract):
    worker_key: str = Field(min_length=1, max_length=200)
    task_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\x00-\x1f]+$")
    content_type: str = Field(min_length=1, max_length=200)
    nuid: Nuid = Field(description="the chunks' subject token: `$O.artifacts.C.<nuid>`")
    size: int = Field(ge=0)
    chunks: int = Field(ge=0)
    digest: str = Field(min_length=1, max_length=100, description="`SHA-256=<base64url of the bytes>`")


class ArtifactReadRequest(Contract):
    worker_key: str = Field(min_length=1, max_length=200)
    task_id: str = Field(min_length=1, max_length=64, description="the running task that reads it")
    attempt: int = Field(ge=1)
    source: ArtifactSource
    index: int = Field(default=0, ge=0, description="which chunk (0 first)")
    after: int = Field(default=0, ge=0, description="the `next_after` of the previous chunk's answer")


class ArtifactChunk(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    data: bytes
    content_type: str
    size: int = Field(description="the whole artifact's size")
    chunks: int
    next_after: int | None = Field(description="pass as `after` for the next chunk; None after the last")
