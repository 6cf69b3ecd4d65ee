"""Worker settings, read from the environment."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from browserfleet_contracts import subjects
from browserfleet_core.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import NoDecode


class WorkerSettings(ServiceSettings):
    service_name: str = "worker"
    worker_key: str | None = Field(default=None, description="sk_worker_... key; wins over everything else")
    worker_invite_code: str | None = Field(
        default=None, description="one-time invite, traded for a key at start"
    )
    worker_name: str = Field(default_factory=socket.gethostname)
    # NoDecode: operators write WORKER_TAGS=gpu,eu-west, not a JSON list
    worker_tags: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worker_slots: int = Field(default=2, ge=1, le=64, description="tasks run at once (one context each)")
    worker_state_dir: Path | None = Field(
        default=None, description="where a key obtained from an invite is saved, so a restart keeps it"
    )
    browser_executable: str | None = Field(
        default=None, description="Chromium binary to use instead of autodetect"
    )
    headless: bool = True
    browser_sandbox: bool | None = Field(
        default=None,
        description="Chromium's sandbox; unset = on unless running as root (containers without a seccomp "
        "profile that allows user namespaces need BROWSER_SANDBOX=false)",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    lease_extend_seconds: float = Field(
        default=10.0, gt=0, description="in-progress ack interval (< ack_wait)"
    )
    pool: str = subjects.DEFAULT_POOL
    shutdown_grace_seconds: float = Field(default=60.0, ge=0, description="how long SIGTERM waits for tasks")

    @field_validator("worker_tags", mode="before")
    @classmethod
    def _split_tags(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v
