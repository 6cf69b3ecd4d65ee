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
