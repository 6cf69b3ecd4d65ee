"""Settings read from the environment. Each service subclasses `ServiceSettings`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArtifactSettings(BaseSettings):
    """Settings every service that declares the `artifacts` object store must agree on (`ensure_streams()`
    reads them from the environment when the caller passes none), so no service shortens or lengthens the
    retention another one set."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    artifact_retention_days: float = Field(
        default=7.0,
        gt=0,
        le=3650,
        description="how long artifacts (screenshots, PDFs, downloads, traces) are kept in the object store; "
        "older ones are deleted by NATS (the bucket's max age)",
    )


Replicas = Annotated[int, Field(ge=1, le=5)]
Storage = Literal["file", "memory"]


class StreamSettings(BaseSettings):
    """How JetStream keeps the platform's streams (`ensure_streams()` reads them from the environment when the
    caller passes none). Every service that declares the streams must agree on them, like the artifacts'
    retention: set them in the shared environment. A replica count above 1 needs a NATS cluster of at least
    that many servers (Kubernetes: k8s/nats, 3 servers, STREAM_REPLICAS=3); the dev stack and Compose run one
    server and keep 1."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    stream_replicas: Replicas = Field(
        default=1,
        description="copies JetStream keeps of every stream, KV bucket and the artifacts object store "
        "(a message is acknowledged once a majority holds it); STREAM_REPLICAS_<NAME> overrides one",
    )
    stream_storage: Storage = Field(
        default="file", description="file or memory, for every stream unless STREAM_STORAGE_<NAME> says"
    )
    stream_replicas_tasks: Replicas | None = None
    stream_replicas_task_updates: Replicas | None = None
    stream_replicas_events: Replicas | None = None
    stream_replicas_artifacts: Replicas | None = None
    stream_storage_tasks: Storage | None = None
    stream_storage_task_updates: Storage | None = None
    stream_storage_events: Storage | None = None
    stream_storage_artifacts: Storage | None = None

    def replicas(self, key: str) -> int:
        """`key`: tasks, task_updates, events or artifacts; anything else (a KV bucket) takes the default."""
        override = getattr(self, f"stream_replicas_{key}", None)
        return int(override) if override is not None else self.stream_replicas

    def storage(self, key: str) -> Storage:
        override: Storage | None = getattr(self, f"stream_storage_{key}", None)
        return override if override is not None else self.stream_storage


class BusSettings(BaseSettings):
    """How a process authenticates to NATS (docs/architecture.md "Securing the bus"). Services connect as the
    user named after them with its password; a worker presents its worker key instead (WORKER_KEY)."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    nats_user: str | None = Field(
        default=None, description="the service's bus identity (its NATS user), e.g. `scheduler`"
    )
    nats_password: SecretStr | None = Field(default=None, description="that user's password")
    nats_tls_ca: Path | None = Field(
        default=None, description="CA bundle that signed the NATS server's certificate (tls:// URLs)"
    )
    nats_tls_cert: Path | None = Field(default=None, description="client certificate, when NATS asks for one")
    nats_tls_key: Path | None = Field(default=None, description="the client certificate's key")


class OutboxSettings(BaseSettings):
    """For a service that relays its transactional outbox (`OutboxRelay`): one knob, so every relay's idle
    pass is tuned the same way."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    outbox_poll_seconds: float = Field(
        default=1.0, gt=0, description="outbox relay pass interval when no commit wakes it"
    )


class WorkerAuthSettings(BaseSettings):
    """For a service that takes a worker's key as its word (`workerkeys.WorkerKeys`): they share
    WORKER_AUTH_CACHE_SECONDS, so a revoked key is refused everywhere within the same time."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    worker_auth_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long a worker key, once authenticated by worker-gateway, is trusted without asking again "
        "(a revoked key is refused again within this time; 0 asks every time)",
    )


def env_list(value: Any) -> Any:
    """A `NoDecode` list field's environment value, `a,b` or a JSON list, as a list; a Python list (or anything
    else) as given, for pydantic to validate."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class ServiceSettings(BusSettings, ArtifactSettings, StreamSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    service_name: str = "browserfleet"
    nats_url: str = Field(
        description="NATS server with JetStream, >= 2.10 (e.g. nats://127.0.0.1:4222). Required.",
    )
    database_url: str | None = Field(default=None, description="postgresql://user@host:port/db")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(default=None, description="Prometheus port; unset disables, 0 picks one")
    metrics_host: str = "127.0.0.1"
    rpc_timeout_seconds: float = 10.0
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_endpoint: str | None = None
    db_pool_size: int = 10
    # ping pooled connections only after this many idle seconds (None: ping at every checkout)
    db_ping_after_idle_seconds: float | None = 1.0
    health_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="each health check's budget (a slower dependency fails its check)",
    )
    health_max_consumer_lag: int = Field(
        default=1000,
        ge=1,
        description="messages a durable consumer may have pending before the service reports itself degraded",
    )
