"""Auth settings from the environment (ACCESS_TOKEN_TTL_SECONDS, REFRESH_TOKEN_TTL_SECONDS, ...)."""

from __future__ import annotations

from browserfleet_core.settings import ServiceSettings, WorkerAuthSettings
from pydantic import Field


class AuthSettings(WorkerAuthSettings, ServiceSettings):
    service_name: str = "auth"
    # the knob the scheduler and vault share (a revoked key is refused everywhere within it); auth keeps its
    # own shorter default, since a worker authenticates to auth once per task (its organization's policy)
    worker_auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long a worker key, once authenticated by worker-gateway, is trusted by auth without "
        "asking again (a removed worker is also dropped at once by workers.revoked; 0 asks every time)",
    )
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=604_800, ge=60, le=90 * 86_400)
    login_slow_after: int = Field(default=3, ge=1, description="failed sign-ins before each retry must wait")
    login_lock_after_account: int = Field(default=10, ge=2, description="failures that lock an account")
    login_lock_after_ip: int = Field(default=50, ge=2, description="failures that lock a client address")
    login_lock_seconds: float = Field(default=900, ge=1, description="how long a lock lasts")
    sso_allow_http_issuers: bool = Field(
        default=False,
        description="accept an identity provider at an http:// issuer (tests, a lab); production needs https",
    )
    sso_http_timeout_seconds: float = Field(default=10.0, gt=0, description="per request to an IdP")
