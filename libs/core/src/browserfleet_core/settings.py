"""Settings read from the environment. Each service subclasses `ServiceSettings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
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


class ServiceSettings(ArtifactSettings):
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
