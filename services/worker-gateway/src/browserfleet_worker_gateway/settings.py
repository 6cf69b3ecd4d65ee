"""Worker-gateway settings."""

from __future__ import annotations

from browserfleet_contracts.workers import POOL_NAME_PATTERN
from browserfleet_core.settings import OutboxSettings, ServiceSettings
from pydantic import Field, SecretStr


class WorkerGatewaySettings(OutboxSettings, ServiceSettings):
    service_name: str = "worker-gateway"
    offline_after_seconds: float = Field(
        default=15.0, gt=0, description="A worker whose last heartbeat is older than this is offline."
    )
    offline_check_seconds: float = Field(
        default=5.0, gt=0, description="how often silent workers are looked for (each gets a worker.offline)"
    )
    platform_pool_invite: SecretStr | None = Field(
        default=None,
        description="a pool invite code the operator chose (>= 32 characters, e.g. `inv_` + 43 random "
        "base64url characters): every worker replica given it as WORKER_INVITE_CODE registers an identity "
        "of its own in the platform pool PLATFORM_POOL_INVITE_POOL. A new value revokes the previous code "
        "(unset, the configured invite is left as it is).",
    )
    platform_pool_invite_pool: str = Field(default="default", pattern=POOL_NAME_PATTERN)
    # --- remote workers over WebSocket (the gateway proxies /workers/ws here; docs/websocket.md) ---
    worker_socket_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the remote workers' WebSocket (`/workers/ws`), which the gateway proxies "
        "(its WORKER_GATEWAY_WS_URL); unset: no remote workers",
    )
    worker_socket_host: str = Field(
        default="0.0.0.0",  # reached by the gateway; not published outside the cluster
        description="address the remote workers' WebSocket listens on",
    )
    worker_socket_max_connections: int = Field(
        default=1000,
        ge=1,
        description="remote workers' sockets this replica serves at once; more are refused",
    )
    worker_socket_ping_seconds: float = Field(
        default=20.0, gt=0, description="WebSocket ping interval; a worker silent for twice this is cut off"
    )

    def configured_invite(self) -> str | None:
        if self.platform_pool_invite is None:
            return None
        code = self.platform_pool_invite.get_secret_value()
        if len(code) < 32:
            raise ValueError("PLATFORM_POOL_INVITE must be at least 32 characters (it is a credential)")
        return code
