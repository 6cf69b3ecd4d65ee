"""Configuration of the webhooks service (environment variables, case-insensitive)."""

from __future__ import annotations

from typing import Annotated, Any

from browserfleet_core.master_keys import MasterKey, PreviousMasterKeys
from browserfleet_core.settings import OutboxSettings, ServiceSettings, env_list
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

# Svix's documented schedule: an attempt right away, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
SVIX_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class WebhooksSettings(OutboxSettings, ServiceSettings):
    service_name: str = "webhooks"
    webhook_master_key: MasterKey | None = Field(
        default=None,
        description="AES-256 key sealing the signing secrets at rest, base64 of 32 bytes. Required to run "
        "(not to describe the service).",
    )
    webhook_master_key_version: int = Field(default=1, ge=1)
    webhook_previous_master_keys: PreviousMasterKeys = Field(
        default_factory=dict,
        description='Older master keys still needed to open sealed secrets: JSON {"<version>": "<base64>"}.',
    )
    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, description="a 2xx must arrive within this long (the whole exchange)"
    )
    # NoDecode: the environment's comma-separated form is parsed below, not as JSON by pydantic-settings
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(SVIX_SCHEDULE),
        min_length=1,
        description="delay before each attempt, in seconds (the first is normally 0): JSON list or "
        "comma-separated; its length is the number of attempts before a delivery is dead",
    )
    webhook_retry_after_max_seconds: float = Field(
        default=36000.0, ge=0, description="a receiver's Retry-After is honoured up to this long"
    )
    webhook_disable_after_seconds: float = Field(
        default=5 * 86400.0,
        gt=0,
        description="an endpoint whose every attempt failed for this long is disabled",
    )
    webhook_circuit_failures: int = Field(
        default=5, ge=1, description="consecutive failed attempts that open an endpoint's circuit"
    )
    webhook_circuit_cooldown_seconds: float = Field(
        default=60.0,
        gt=0,
        description="how long an open circuit holds deliveries before one probe is let through",
    )
    webhook_secret_overlap_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="after a rotation, deliveries are signed with the old secret too for this long",
    )
    webhook_response_excerpt_bytes: int = Field(
        default=512, ge=0, le=65536, description="bytes of each answer kept in the attempt log"
    )
    webhook_replay_batch: int = Field(
        default=200, ge=1, description="deliveries a replay job requeues per step"
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="deliver to loopback/private/link-local/metadata addresses (tests and the dev stack only)",
    )
    webhook_concurrency: int = Field(default=16, ge=1, description="deliveries in flight per replica")
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often the dispatcher looks for due retries when nothing wakes it"
    )

    @property
    def max_attempts(self) -> int:
        return len(self.webhook_retry_schedule)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return env_list(value)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE delays must be >= 0")
        return value
