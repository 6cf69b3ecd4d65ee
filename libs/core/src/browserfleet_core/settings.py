"""Settings read from the environment. Each service subclasses `ServiceSettings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
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
