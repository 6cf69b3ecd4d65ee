"""Gateway settings, read from the environment (GATEWAY_HOST, GATEWAY_PORT, CORS_ORIGINS, ...)."""

from __future__ import annotations

from typing import Annotated, Any

from browserfleet_core.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import NoDecode


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65_535)
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="larger request bodies get 413")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed by CORS; empty disables CORS",
    )
    jwks_min_refresh_seconds: float = Field(
        default=5.0, ge=0, description="an unknown key id refetches the JWKS at most this often"
    )
    rate_limit_per_second: float = Field(
        default=10.0, ge=0, description="sustained requests per second per principal; 0 disables"
    )
    rate_limit_burst: int = Field(default=20, ge=1, description="requests a principal may make at once")
    api_key_rate_per_second: float = Field(
        default=10.0, ge=0, description="sustained requests per second per API key (burst: twice that)"
    )
    rate_limit_plans: dict[str, float] = Field(
        default_factory=dict,
        description='per-plan API key rate, JSON, e.g. {"pro": 50, "enterprise": 200}; others use the default',
    )
    login_rate_per_second: float = Field(
        default=0.2, ge=0, description="login attempts per second per client address; 0 disables"
    )
    login_burst: int = Field(default=5, ge=1, description="login attempts a client address may make at once")
    api_key_cache_seconds: float = Field(
        default=1.0, ge=0, description="how long a verified API key is trusted before auth is asked again"
    )
    health_timeout_seconds: float = Field(default=2.0, gt=0, description="per-dependency readiness budget")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        # NoDecode: accept `a,b` from the environment as well as a JSON list or a Python list.
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [o.strip() for o in v.split(",") if o.strip()]
        return v
