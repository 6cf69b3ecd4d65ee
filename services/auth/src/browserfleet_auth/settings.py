"""Auth settings from the environment (ACCESS_TOKEN_TTL_SECONDS, REFRESH_TOKEN_TTL_SECONDS, ...)."""

from __future__ import annotations

from browserfleet_core.settings import ServiceSettings
from pydantic import Field


class AuthSettings(ServiceSettings):
    service_name: str = "auth"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=604_800, ge=60, le=90 * 86_400)
